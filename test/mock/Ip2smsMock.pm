# Starts and stops the mock IP2SMS gateway (ip2sms_mock.py beside this file)
# for TAP tests, on a free 127.0.0.1 port, and reads what it received.
package Ip2smsMock;

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;

# The first python3 on PATH this user may run (root's pyenv shims may not be).
sub python3
{
	for my $dir (split /:/, $ENV{PATH})
	{
		return "$dir/python3" if -x "$dir/python3" && -f "$dir/python3";
	}
	return 'python3';
}

# Ip2smsMock->new(dir => $scratch_dir [, login => .., password => ..])
sub new
{
	my ($class, %opt) = @_;
	my $self = bless { login => 'user', password => 'secret', %opt }, $class;
	my $script = File::Spec->catfile(dirname(__FILE__), 'ip2sms_mock.py');
	$self->{port_file} = "$self->{dir}/mock.port";
	$self->{log} = "$self->{dir}/mock.log";
	unlink $self->{port_file}, $self->{log};
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec python3(), $script, '--port-file', $self->{port_file},
		  '--log', $self->{log}, '--login', $self->{login},
		  '--password', $self->{password}
		  or die "exec python3: $!";
	}
	$self->{pid} = $pid;
	for (1 .. 200)
	{
		last if -s $self->{port_file};
		usleep(50_000);
	}
	open my $fh, '<', $self->{port_file} or die "mock did not start";
	chomp($self->{port} = <$fh>);
	close $fh;
	$self->{http} = HTTP::Tiny->new(timeout => 10);
	return $self;
}

sub port { $_[0]{port} }
sub send_url { "http://127.0.0.1:$_[0]{port}/ip2sms/" }
sub status_url { "http://127.0.0.1:$_[0]{port}/ip2sms-request/" }

# Writes the password file the server reads (mode 0600); returns its path.
sub password_file
{
	my ($self, $password) = @_;
	my $file = "$self->{dir}/ip2sms.password";
	open my $fh, '>', $file or die "$file: $!";
	print $fh (defined $password ? $password : $self->{password}), "\n";
	close $fh;
	chmod 0600, $file or die "chmod $file: $!";
	return $file;
}

# The postgresql.conf lines that point smsdispatch at this mock.
sub conf
{
	my ($self) = @_;
	return join '',
	  "smsdispatch.ip2sms_url = '" . $self->send_url . "'\n",
	  "smsdispatch.ip2sms_status_url = '" . $self->status_url . "'\n",
	  "smsdispatch.ip2sms_login = '$self->{login}'\n",
	  "smsdispatch.ip2sms_password_file = '" . $self->password_file . "'\n",
	  "smsdispatch.ip2sms_source = 'TestSender'\n";
}

# control(mode => '5xx', count => 2, ...): switches the fault mode.
sub control
{
	my ($self, %q) = @_;
	my $r = $self->{http}->get("http://127.0.0.1:$self->{port}/control?"
		  . $self->{http}->www_form_urlencode(\%q));
	die "mock control failed: $r->{status}" unless $r->{success};
}

# hang_first(16 [, match => REGEX]): the next 16 send requests (those whose
# text matches, with match) never get an answer; later ones are answered.
sub hang_first
{
	my ($self, $n, %opt) = @_;
	$self->control(mode => 'hang', count => $n, kind => 'send',
		defined $opt{match} ? (match => $opt{match}) : ());
}

# Every request the mock received, as hashes, in order.
sub log_entries
{
	my ($self) = @_;
	my @entries;
	open my $fh, '<:encoding(UTF-8)', $self->{log} or return ();
	while (my $line = <$fh>)
	{
		push @entries, JSON::PP->new->utf8(0)->decode($line);
	}
	close $fh;
	return @entries;
}

# The send requests the mock received, once it logged at least $n of them
# or $timeout seconds (default 30) passed: a slow answer is logged when it
# is given.
sub wait_sends
{
	my ($self, $n, $timeout) = @_;
	my $end = time() + ($timeout // 30);
	my @sends;
	while (1)
	{
		@sends = grep { $_->{kind} eq 'send' } $self->log_entries;
		last if @sends >= $n || time() >= $end;
		usleep(50_000);
	}
	return @sends;
}

# A started cluster whose worker sends through this mock, with the
# extension created; extra is more postgresql.conf text.
sub node
{
	my ($self, $name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'smsdispatch'\n"
		  . "smsdispatch.naptime = '200ms'\n"
		  . "smsdispatch.max_per_phone_per_hour = 0\n"
		  . "smsdispatch.ip2sms_timeout = '2s'\n"
		  . $self->conf . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION smsdispatch');
	return $node;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	# from DESTROY at exit, the mock's status must not become the test's
	local $?;
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;

# Helpers of the Kannel TAP tests (test/t/11*.pl): a real Kannel (bearerbox,
# smsbox and the fake SMSC fakesmsc of kannel-extras) on free loopback ports,
# with its own kannel.conf in a temporary directory, started once per test
# file as the user the test runs as; and the smsdispatch-http sidecar.
# Everything started here is stopped by pid when the test ends, however it
# ends; nothing else is touched.
package KannelTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Handle;
use POSIX qw(:sys_wait_h mkfifo);
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(kannel_start start_http stop_http http_get poll_until uri_escape
	channels_doc);

my $FAKESMSC = '/usr/lib/kannel/test/fakesmsc';

# pids started here and not yet stopped
my %children;

END
{
	my $status = $?;
	for my $pid (keys %children)
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	$? = $status;
}

# Starts @cmd with stdin from $stdin (or /dev/null), stdout and stderr
# appended to $log; returns its pid.
sub spawn
{
	my ($log, $stdin, @cmd) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', $stdin // '/dev/null') or POSIX::_exit(126);
		open(STDOUT, '>>', $log) or POSIX::_exit(126);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(126);
		exec(@cmd) or POSIX::_exit(127);
	}
	$children{$pid} = 1;
	return $pid;
}

# SIGTERM, then SIGKILL after $timeout seconds; waits for it.
sub stop_pid
{
	my ($pid, $timeout) = @_;
	return unless $pid && $children{$pid};
	kill 'TERM', $pid;
	my $deadline = time() + ($timeout // 15);
	while (time() < $deadline)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			delete $children{$pid};
			return;
		}
		usleep(50_000);
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	delete $children{$pid};
}

# Calls $cond until it returns true or $timeout seconds pass; returns
# whether it did.
sub poll_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	return $cond->() ? 1 : 0;
}

# Percent-encodes a query parameter's value.
sub uri_escape
{
	my ($s) = @_;
	utf8::encode($s) if utf8::is_utf8($s);
	$s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord($1))/ge;
	return $s;
}

# A GET of $url: (status, body). Status 599 is HTTP::Tiny's own: no
# connection.
sub http_get
{
	my ($url, $method) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->request($method // 'GET', $url);
	return ($r->{status}, $r->{content});
}

# docs/channels.md of this tree, whose kannel.conf lines and dlr-url the
# tests use as printed.
sub channels_doc
{
	return slurp_file(dirname(__FILE__) . '/../../docs/channels.md');
}

# Starts Kannel: bearerbox, smsbox and fakesmsc, each on a free loopback
# port, configured by kannel.conf.in beside this file. %opt: service
# (kannel.conf groups to add, such as an sms-service).
# Returns the suite: a hash with the ports and the methods below.
sub kannel_start
{
	my (%opt) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir('kannel');
	my $self = bless {
		dir => $dir,
		admin_port => PostgreSQL::Test::Cluster::get_free_port(),
		smsbox_port => PostgreSQL::Test::Cluster::get_free_port(),
		smsc_port => PostgreSQL::Test::Cluster::get_free_port(),
		sendsms_port => PostgreSQL::Test::Cluster::get_free_port(),
		conf => "$dir/kannel.conf",
		fakesmsc_out => "$dir/fakesmsc.out",
	}, 'KannelTest';
	mkdir("$dir/spool") or die "$dir/spool: $!";

	my $service = defined $opt{service} ? "\n$opt{service}" : '';
	my %fill = (
		DIR => $dir,
		ADMIN_PORT => $self->{admin_port},
		SMSBOX_PORT => $self->{smsbox_port},
		SMSC_PORT => $self->{smsc_port},
		SENDSMS_PORT => $self->{sendsms_port},
		LOG_LEVEL => 0,
		MAX_MESSAGES => 3);
	(my $conf = slurp_file(dirname(__FILE__) . '/kannel.conf.in')) =~
	  s{@(\w+)@}{$fill{$1} // die "kannel.conf.in: no value for \@$1\@"}ge;
	PostgreSQL::Test::Utils::append_to_file($self->{conf}, $conf . $service);

	$self->{bearerbox} = spawn("$dir/bearerbox.out", undef, '/usr/sbin/bearerbox', $self->{conf});
	poll_until(sub { ($self->admin('status'))[0] == 200 }, 20)
	  or die "bearerbox did not answer on its admin port; see $dir/bearerbox.log";
	$self->start_smsbox;

	# fakesmsc reads MOs from the FIFO; the writer kept open here means it
	# never sees end of file
	mkfifo("$dir/mo.fifo", 0600) or die "mkfifo: $!";
	$self->{fakesmsc} = spawn($self->{fakesmsc_out}, "$dir/mo.fifo", $FAKESMSC,
		'-H', '127.0.0.1', '-r', $self->{smsc_port}, '-i', '0.1', '-v', '0');
	open($self->{mo}, '>', "$dir/mo.fifo") or die "$dir/mo.fifo: $!";
	$self->{mo}->autoflush(1);
	poll_until(sub { ($self->admin('status'))[1] =~ /fake\[fake\].*\(online/ }, 20)
	  or die "fakesmsc did not connect to bearerbox; see $dir/bearerbox.log";
	return $self;
}

# A GET of bearerbox's admin port: (status, body).
sub admin
{
	my ($self, $command) = @_;
	return http_get("http://127.0.0.1:$self->{admin_port}/$command.txt?password=kannel-test");
}

# Starts smsbox and waits until bearerbox counts it.
sub start_smsbox
{
	my ($self) = @_;
	$self->{smsbox} = spawn("$self->{dir}/smsbox.out", undef, '/usr/sbin/smsbox', $self->{conf});
	poll_until(sub { ($self->admin('status'))[1] =~ /^Box connections:\n\s+smsbox:/m }, 20)
	  or die "smsbox did not connect to bearerbox; see $self->{dir}/smsbox.log";
}

# Stops smsbox (what it held in memory, retries included, is lost).
sub stop_smsbox
{
	my ($self) = @_;
	stop_pid($self->{smsbox});
	delete $self->{smsbox};
}

# Types an MO into fakesmsc: from $sender to $receiver saying $text.
sub type_mo
{
	my ($self, $sender, $receiver, $text) = @_;
	print { $self->{mo} } "$sender $receiver text $text\n";
}

# The MTs fakesmsc received so far, as "sender receiver text" strings.
sub received
{
	my ($self) = @_;
	my $out = -e $self->{fakesmsc_out} ? slurp_file($self->{fakesmsc_out}) : '';
	return map { /Got message \d+: <(.*)>$/ ? $1 : () } split /\n/, $out;
}

# Sends an SMS through Kannel's sendsms; %p: to, text, dlr-mask, dlr-url,
# from... Returns (status, body).
sub sendsms
{
	my ($self, %p) = @_;
	my %q = (username => 'tester', password => 'kannel-test', %p);
	my $query = join('&', map { "$_=" . uri_escape($q{$_}) } sort keys %q);
	return http_get("http://127.0.0.1:$self->{sendsms_port}/cgi-bin/sendsms?$query");
}

# Stops fakesmsc, smsbox and bearerbox, by the pids started here.
sub stop
{
	my ($self) = @_;
	close($self->{mo}) if $self->{mo};
	delete $self->{mo};
	stop_pid($self->{fakesmsc});
	stop_pid($self->{smsbox});
	stop_pid($self->{bearerbox}, 20);
}

# The installed sidecar, next to the server binaries.
sub http_program
{
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	return -x "$bindir/smsdispatch-http" ? "$bindir/smsdispatch-http" : 'smsdispatch-http';
}

# Starts smsdispatch-http on 127.0.0.1:$port for connection string $db,
# with @extra options; waits until it answers. Returns its pid.
sub start_http
{
	my ($port, $db, $log, @extra) = @_;
	my $pid = spawn($log, undef, http_program(), '--listen', "127.0.0.1:$port",
		'--db', $db, @extra);
	poll_until(
		sub {
			die "smsdispatch-http exited at start; see $log"
			  if waitpid($pid, WNOHANG) == $pid && delete $children{$pid};
			(http_get("http://127.0.0.1:$port/"))[0] == 404;
		},
		20) or die "smsdispatch-http did not answer on port $port; see $log";
	return $pid;
}

# Stops smsdispatch-http.
sub stop_http
{
	my ($pid) = @_;
	stop_pid($pid);
}

1;

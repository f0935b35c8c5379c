# Helpers of the modem sidecar's TAP tests and benchmarks: a cluster with the
# extension, gammu's dummy phone, and smsdispatch-modem started and stopped
# by the test, every wait bounded.
package ModemTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Path qw(make_path);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(modem_node dummy_gammurc start_sidecar stop_sidecar
	wait_for_value wait_until put_dummy_sms dummy_inbox_count sidecar_program
	start_simulator stop_simulator sim_ctl sim_events);

# Processes started here and not yet stopped: killed when the test ends,
# however it ends, so that a failing test leaves nothing running.
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

# The installed sidecar, next to the server binaries on PATH.
sub sidecar_program
{
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	return -x "$bindir/smsdispatch-modem" ? "$bindir/smsdispatch-modem" : 'smsdispatch-modem';
}

# A started cluster with the extension created in database postgres.
sub modem_node
{
	my ($name, %conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => ['--encoding=UTF8', '--locale=C']);
	my $extra = join('', map { "$_ = $conf{$_}\n" } sort keys %conf);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'smsdispatch'\n" . $extra);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION smsdispatch');
	return $node;
}

# A gammurc whose section 0 is gammu's dummy phone in directory $dir,
# logging what libgammu does (the sent SMS among it) to $dir.log.
sub dummy_gammurc
{
	my ($dir) = @_;
	make_path($dir);
	my $rc = "$dir.gammurc";
	open(my $fh, '>', $rc) or die "$rc: $!";
	print $fh "[gammu]\ndevice = $dir\nconnection = none\nmodel = dummy\n"
	  . "logfile = $dir.log\nlogformat = textall\n";
	close $fh;
	return $rc;
}

# Starts smsdispatch-modem; returns its pid. %opt: dsn, gammurc, name,
# log, heartbeat, poll, section, prefix (an array ref run before it, e.g.
# valgrind), extra (more options).
sub start_sidecar
{
	my (%opt) = @_;
	my @cmd = (@{ $opt{prefix} // [] }, sidecar_program(),
		'--dsn', $opt{dsn}, '--gammurc', $opt{gammurc},
		'--name', $opt{name}, '--log', $opt{log},
		'--heartbeat', $opt{heartbeat} // 1, '--poll', $opt{poll} // 1);
	push @cmd, '--section', $opt{section} if defined $opt{section};
	push @cmd, @{ $opt{extra} } if $opt{extra};
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$opt{log}.out");
		open(STDERR, '>>', "$opt{log}.out");
		exec(@cmd) or POSIX::_exit(127);
	}
	$children{$pid} = 1;
	return $pid;
}

# Sends SIGTERM (or $signal) and waits up to $timeout seconds; returns the
# exit status ($? style), or undef after killing a sidecar that did not stop.
sub stop_sidecar
{
	my ($pid, $timeout, $signal) = @_;
	$timeout //= 30;
	kill $signal // 'TERM', $pid;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			delete $children{$pid};
			return $?;
		}
		usleep(50_000);
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	delete $children{$pid};
	return undef;
}

# Polls $sql until it returns $expected; returns the last value seen.
sub wait_for_value
{
	my ($node, $sql, $expected, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	my $got;
	while (1)
	{
		$got = $node->safe_psql('postgres', $sql);
		return $got if $got eq $expected || time() > $deadline;
		usleep(100_000);
	}
}

# Polls the code ref until it returns true or $timeout seconds pass;
# returns its last result.
sub wait_until
{
	my ($check, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (1)
	{
		my $ok = $check->();
		return $ok if $ok || time() > $deadline;
		usleep(100_000);
	}
}

# Places a received SMS in the dummy phone's inbox (folder 1, location
# $loc) with test/modem/dummy_sms.py. %f: number, text, date
# (YYYYMMDDTHHMMSSZ), udh (hex, for a part of a concatenated message).
sub put_dummy_sms
{
	my ($dir, $loc, %f) = @_;
	my @cmd = ('python3', dirname(__FILE__) . '/dummy_sms.py', '--dir', $dir,
		'--location', $loc, '--number', $f{number}, '--text', $f{text});
	push @cmd, '--date', $f{date} if $f{date};
	push @cmd, '--udh', $f{udh} if $f{udh};
	open(my $ph, '-|', @cmd) or die "dummy_sms.py: $!";
	my @out = <$ph>;
	close($ph) or die "dummy_sms.py failed for location $loc";
}

# How many messages the dummy phone's inbox holds.
sub dummy_inbox_count
{
	my ($dir) = @_;
	opendir(my $dh, "$dir/sms/1") or return 0;
	my $n = grep { /^\d+$/ } readdir($dh);
	closedir $dh;
	return $n;
}

# Starts the simulated AT modem (test/modem/atsim.py) in directory $dir;
# returns a hash: pid, ctl (socket), events (JSON lines), rc (a gammurc
# for it), tty. Waits until it answers on its control socket.
sub start_simulator
{
	my ($dir) = @_;
	make_path($dir);
	my %sim = (ctl => "$dir/ctl", events => "$dir/events.jsonl",
		rc => "$dir/gammurc", tty => "$dir/tty");
	my $script = dirname(__FILE__) . '/atsim.py';
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$dir/atsim.out");
		open(STDERR, '>>', "$dir/atsim.out");
		exec('python3', $script, '--link', $sim{tty}, '--control', $sim{ctl},
			'--events', $sim{events}) or POSIX::_exit(127);
	}
	$sim{pid} = $pid;
	$children{$pid} = 1;
	open(my $fh, '>', $sim{rc}) or die "$sim{rc}: $!";
	print $fh "[gammu]\ndevice = $sim{tty}\nconnection = at\nmodel = at\n"
	  . "logfile = $dir/gammu.log\nlogformat = textalldate\n";
	close $fh;
	wait_until(sub { -S $sim{ctl} && (sim_ctl(\%sim, 'ping') // '') eq 'pong' }, 20)
	  or die "the simulated modem did not start";
	return \%sim;
}

# Stops the simulator started by start_simulator (as a sidecar is stopped).
sub stop_simulator
{
	my ($sim) = @_;
	stop_sidecar($sim->{pid}, 10);
}

# One control command to the simulator; returns its one-line answer.
sub sim_ctl
{
	my ($sim, $cmd) = @_;
	my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $sim->{ctl})
	  or return undef;
	$sock->timeout(5);
	print $sock "$cmd\n";
	my $answer = <$sock>;
	close $sock;
	chomp $answer if defined $answer;
	return $answer;
}

# The PDU parts the simulator received, decoded, oldest first.
sub sim_events
{
	my ($sim) = @_;
	open(my $fh, '<:raw', $sim->{events}) or return ();
	my @events = map { JSON::PP->new->utf8->decode($_) } grep { /\S/ } <$fh>;
	close $fh;
	return @events;
}

1;

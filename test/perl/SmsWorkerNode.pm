# Helpers of the background worker's TAP tests (test/t/02*.pl): a cluster
# with smsdispatch preloaded and the loopback test channel on, recipient
# lists, and waiting for a condition with a deadline.
package SmsWorkerNode;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(worker_node make_list worker_pid crash_worker wait_until repeated_sends);

# A started cluster with the worker (unless preload => 0) and, unless
# no_extension => 1, the extension created in postgres. conf adds lines;
# install_path runs another installed major; init_only => 1 returns it
# before it starts.
sub worker_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name,
		$opt{install_path} ? (install_path => $opt{install_path}) : ());
	$node->init(
		extra => [ '--encoding=UTF8', '--locale=C' ],
		$opt{allows_streaming} ? (allows_streaming => 1) : ());
	my $preload = $opt{preload} // 'smsdispatch';
	$node->append_conf('postgresql.conf',
		($preload ne '' ? "shared_preload_libraries = '$preload'\n" : '')
		  . "smsdispatch.loopback_channel = on\n"
		  . "smsdispatch.naptime = '1s'\n"
		  . ($opt{conf} // ''));
	return $node if $opt{init_only};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION smsdispatch')
	  unless $opt{no_extension};
	return $node;
}

# A recipient list: members are [phone, level, ack_timeout].
sub make_list
{
	my ($node, $list, $repeat, @members) = @_;
	my $sql = "SELECT sms_list_create('$list', NULL, $repeat);\n";
	$sql .= "SELECT sms_list_add('$list', '$_->[0]', $_->[1], '$_->[2]');\n"
	  for @members;
	$node->safe_psql('postgres', $sql);
}

# The worker's pid, or '' when none runs.
sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'");
}

# Kills the worker (by default the running one) with SIGKILL, as a crash
# would, and returns once the postmaster has reinitialized and accepts
# connections again: until then a query may still reach the old server, or
# be refused while it recovers. Needs restart_after_crash = on.
sub crash_worker
{
	my ($node, $pid) = @_;
	$pid //= worker_pid($node);
	my $offset = -s $node->logfile;
	kill('KILL', $pid) or die "kill -9 of the worker $pid: $!";
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	return $pid;
}

# Polls a query until it returns $expected or $timeout seconds pass;
# returns whether it got there.
sub wait_until
{
	my ($node, $query, $expected, $timeout) = @_;
	my $end = time() + $timeout;
	while (time() < $end)
	{
		my $got = $node->safe_psql('postgres', $query);
		return 1 if $got eq $expected;
		usleep(50_000);
	}
	diag("timed out waiting for: $query (last: "
		  . $node->safe_psql('postgres', $query) . ")");
	return 0;
}

# How many (alarm, phone) pairs got more than one SMS: without repeat rounds
# each recipient is sent an alarm once, so anything but 0 is a duplicate send.
sub repeated_sends
{
	my ($node) = @_;
	return $node->safe_psql(
		'postgres', "SELECT count(*) FROM (
			SELECT message_id, phone_number FROM verification.sms_log
			 WHERE message_id IS NOT NULL
			 GROUP BY 1, 2 HAVING count(*) > 1) d");
}

1;

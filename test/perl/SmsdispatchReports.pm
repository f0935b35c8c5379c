# Helpers of the report tests (test/t/06x_*.pl): a cluster with the
# extension, a log and alarms with known outcomes, a free local port.
package SmsdispatchReports;

use strict;
use warnings;
use Exporter 'import';
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;

our @EXPORT_OK = qw(start_node fill_report_data ensure_stats free_port);

# A started cluster preloading smsdispatch and the libraries in $preload
# (plus the settings in $conf), with the extension created in database $db.
sub start_node
{
	my ($name, $db, $preload, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'smsdispatch" . ($preload ? ",$preload" : '') . "'\n"
		  . "smsdispatch.database = 'postgres'\n" . ($conf // ''));
	$node->start;
	$node->safe_psql('postgres', "CREATE DATABASE $db") if $db ne 'postgres';
	$node->safe_psql($db, 'CREATE EXTENSION smsdispatch');
	return $node;
}

# The last 24 hours hold, per type: verification 3 delivered (5, 20 and
# 95 s) and 1 Expired; 2FA 1 delivered (40 s) and 1 Undeliverable; one
# verification SMS is still queued. The two days before hold older traffic,
# and three alarms were acked at levels 1, 1 and 2.
sub fill_report_data
{
	my ($node, $db) = @_;
	$node->safe_psql($db, q{
		INSERT INTO verification.sms_log (phone_number, type, body, send_state,
			gateway_status, inserted_at, status_changed_at)
		SELECT '+38050000' || lpad(g::text, 4, '0'), t.type, '<b>code</b> & "x"',
			   t.state, t.status, now() - t.age, now() - t.age + t.took
		  FROM (VALUES
			('verification', 'submitted', 'Delivered', interval '2 hours', interval '5 s', 1),
			('verification', 'submitted', 'Delivered', '3 hours', '20 s', 1),
			('verification', 'submitted', 'Delivered', '4 hours', '95 s', 1),
			('verification', 'submitted', 'Expired', '5 hours', '2 hours', 1),
			('verification', 'queued', NULL, '1 minute', NULL, 1),
			('2FA', 'submitted', 'Delivered', '6 hours', '40 s', 1),
			('2FA', 'submitted', 'Undeliverable', '7 hours', '10 s', 1),
			('verification', 'submitted', 'Delivered', '30 hours', '12 s', 40),
			('verification', 'submitted', 'Rejected', '31 hours', '1 s', 6),
			('text', 'submitted', 'Delivered', '50 hours', '3 min', 25),
			('text', 'failed', NULL, '51 hours', NULL, 4)) AS t(type, state, status, age, took, n),
		  LATERAL generate_series(1, t.n) AS g;
		SELECT sms_list_create('oncall');
		SELECT sms_list_add('oncall', '+380501111111', 1, '5 min', 'Alice <on call>');
		SELECT sms_list_add('oncall', '+380502222222', 2, '5 min', 'Bob');
		WITH a AS (
			INSERT INTO smsdispatch.message (number, body, list, state, level, created_at,
				acked_at, acked_by, closed_at, channel)
			SELECT lpad(n::text, 4, '0'), 'alarm ' || n, 'oncall', 'acked', lvl,
				   now() - interval '1 day', now() - interval '1 day' + took,
				   CASE lvl WHEN 1 THEN '+380501111111' ELSE '+380502222222' END,
				   now() - interval '1 day' + took, 'ip2sms'
			  FROM (VALUES (1, 1, interval '90 s'), (2, 1, '150 s'), (3, 2, '400 s')) AS a(n, lvl, took)
			RETURNING id, level, acked_at)
		-- the recipient who acked: Alice at level 1, Bob at level 2
		INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout,
			status, acked_at)
		SELECT a.id, r.phone, r.name, r.level, '5 min',
			   CASE WHEN r.level = a.level THEN 'ACK' ELSE 'ACK_TIME_OVER' END,
			   CASE WHEN r.level = a.level THEN a.acked_at END
		  FROM a JOIN (VALUES ('+380501111111', 'Alice <on call>', 1), ('+380502222222', 'Bob', 2))
				 AS r(phone, name, level) ON r.level <= a.level;
	});
	return;
}

# smsdispatch.stats() comes with the IP2SMS channel (issue 4). Where it is
# not built yet, a stand-in with the same signature and names returns fixed
# values, so the snapshot job and the exporter can be tested; returns 1 then.
sub ensure_stats
{
	my ($node, $db) = @_;
	return 0
	  if $node->safe_psql($db, q{SELECT to_regprocedure('smsdispatch.stats()') IS NOT NULL})
	  eq 't';
	$node->safe_psql($db, q{
		CREATE FUNCTION smsdispatch.stats() RETURNS TABLE (name text, value bigint)
		LANGUAGE sql AS $$
			VALUES ('requests_send', 7::bigint), ('requests_status', 3),
				   ('answers_Accepted', 7), ('answers_Delivered', 2),
				   ('errors_connect', 0), ('errors_timeout', 1), ('errors_http_5xx', 0),
				   ('errors_http_401', 0), ('errors_http_other', 0), ('errors_parse', 0),
				   ('retries', 1), ('latency_us_sum', 250000), ('latency_count', 10),
				   ('latency_le_10ms', 2), ('latency_le_50ms', 5), ('latency_le_100ms', 2),
				   ('latency_le_500ms', 1), ('latency_le_1s', 0), ('latency_le_5s', 0),
				   ('latency_gt_5s', 0)
		$$;
		GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader;
	});
	return 1;
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
sub free_port
{
	my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
		Proto => 'tcp', Listen => 1)
	  or die "cannot bind a local port: $!";
	my $port = $sock->sockport;
	close $sock;
	return $port;
}

1;

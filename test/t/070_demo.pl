# What a newcomer runs first: make check and make demo print no make warning,
# and the demo shows the effect of each of its steps and leaves nothing open
# or running, also when it is stopped midway. Where Kannel is installed, the
# demo shows an alarm out through Kannel (the SMS fakesmsc received, the
# delivery reports making the rows Delivered) acknowledged by a reply typed
# into fakesmsc, with the confirmations through Kannel too; where it is not,
# it says so and shows the rest.
use strict;
use warnings;
use File::Basename;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use KannelTest;

my $top = dirname(dirname(dirname(__FILE__)));
$top = '.' if $top eq '';
my $pg_config = $ENV{PG_CONFIG} // 'pg_config';

# make -n runs the recursive makes too (dry), so every level is read; the
# outer make's flags are not passed on
for my $goal ('check', 'demo', 'all')
{
	local $ENV{MAKEFLAGS} = '';
	local $ENV{MAKELEVEL} = '';
	my ($out, $err);
	IPC::Run::run([ 'make', '-C', $top, '-n', $goal, "PG_CONFIG=$pg_config" ],
		'<', \undef, '>', \$out, '2>', \$err);
	unlike($out . $err, qr/warning/i, "make $goal prints no make warning");
	like($out, qr/\b(run-checks|demo)\.sh|\bgcc|\bcc\b|Nothing to be done|is up to date/,
		"make -n $goal shows what it would run");
	# the demo's story is not preceded by the compiler's lines
	like($out, qr/^\S*make -s all\n.*^\S*make -s install\n/ms,
		'make demo builds and installs silently') if $goal eq 'demo';
}

# the demo itself, in a directory of its own
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($out, $err);
{
	local $ENV{SMSDISPATCH_DEMO_DIR} = $dir;
	local $ENV{PG_CONFIG} = $pg_config;
	IPC::Run::run([ 'sh', "$top/test/demo.sh" ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(300));
}
is($?, 0, 'the demo ran to its end') or diag($err);
is($err, '', 'nothing on stderr');

like($out, qr/== smsdispatch is installed in the PostgreSQL that pg_config names\nlibrary: \S+\/smsdispatch\.so/,
	'it says where make installed the extension');
like($out, qr/after the INSERT \|\s+1\n.*after two UPDATEs \|\s+1\n/s,
	'the verification: one SMS after the INSERT, still one after the updates');
like($out, qr/0001\s+\| open\s+\|\s+1 \|\s+1 \| Alice \| NOT_YET_ACK \| submitted/,
	"the queue shows Alice's SMS submitted and her waiting for the ack");
unlike($out, qr/Alice \| NOT_SENT/, 'never Alice NOT_SENT while her SMS is out');
like($out, qr/\+380501111111 \| 0002 ack \| ack/, 'the modem reply acknowledged its alarm');
like($out, qr/2 \| Bob\s+\| ACK\s+\|/, 'Bob acknowledged the live escalation');
like($out, qr/\+380508888888 \| Dan\s+\| \[\d{4}\] acknowledged\s+\|\s+1 \| submitted\n\s*\+380507777777 \| Erin \| \[\d{4}\] taken by Dan\s+\|\s+1 \| submitted/,
	'the ack is confirmed to Dan, and Erin is told who took it');
like($out, qr/requests_send \| requests_status/, 'the gateway table is shown');
like($out, qr/\n\s*\d{4}\s+\|\s+1 \|\s+0\.\d\d \|\s+[1-9]\d*\n/,
	'the alarm behind the text backlog is submitted within a second, the backlog still queued');
like($out, qr/modem\s+\| no_sidecar \| no sidecar running; the last one, demo-modem, stopped at/,
	'channel_health shows the stopped modem');
like($out, qr/modem\s+\| failed\s+\| failed over to ip2sms as sms_log \d+: channel modem is no_sidecar/,
	'the alarm on the modem failed over to IP2SMS');
like($out, qr/failover \| \+380507775555 \| modem to ip2sms/, 'with a failover event');
my ($hour) = $out =~ /^ \d{4}-\d\d-\d\d \d\d:00:00\+00 \|\s+\d+ \|\s+(\d+) \|/m;
ok(defined $hour && $hour > 0, 'the gateway this hour shows its send requests (' . ($hour // 'none') . ')');
like($out, qr/report: \S+report\.html \(\d+ bytes/, 'the report is written');
like($out, qr/open_alarms \n-+\n\s+0\n/, 'no alarm is left open');
like($out, qr/\+\d+ \| \[\d{4}\] cancelled \| submitted/,
	'those the cancelled alarm paged are told, before the demo stops the server');
like($out, qr/\d{4}\s+\| Ann\s+\| \+\d+ \| submitted\n.*\d{4}\s+\| Ben\s+\| \+\d+ \| submitted\n/s,
	'the rotation pages Ann before the hand-off and Ben after it, both SMS submitted');
like($out, qr/open_alarms .*report: /s, 'the report is written after the last alarm is closed');
my $report = slurp_file("$dir/report.html");
like($report,
	qr{<caption>Open alarms now</caption><thead>.*?</thead><tbody><tr><td colspan="\d+" class="empty">no rows</td>},
	'the report shows the final state: no open alarm');

if (-x '/usr/sbin/bearerbox' && -x '/usr/sbin/smsbox' && -x '/usr/lib/kannel/test/fakesmsc')
{
	my ($kannel) = $out =~ /\n(== Kannel: .*?)\n== /s;
	$kannel //= '';
	my ($number) = $kannel =~ /Got message \d+: <\+380990000000 \+380503330001 text \[(\d{4})\] Core router down>/;
	ok(defined $number, "the demo prints the alarm as fakesmsc logged it, to Gina") or diag($kannel);
	$number //= 'none';
	like($kannel, qr/Got message \d+: <\+380990000000 \+380503330005 text \[$number\] Core router down>/,
		'and to Hal, the other one on level 1');
	like($kannel, qr/\+380503330001 \| Gina \| kannel1 \| submitted\s+\| Delivered\n.*\+380503330005 \| Hal\s+\| kannel1 \| submitted\s+\| Delivered\n/s,
		"Kannel's delivery reports made both rows Delivered");
	like($kannel, qr/$number\s+\| acked \| \+380503330001\n/,
		"the reply typed into fakesmsc acknowledged the alarm, as Gina");
	like($kannel, qr/\+380503330001 \| OK $number on my way \| ack\n/, 'the inbox shows her reply');
	like($kannel, qr/\+380503330005 \| Hal\s+\| \[$number\] taken by Gina \| kannel1 \| submitted\n/,
		'Hal is told who took it, through kannel1');
	like($kannel, qr/Got message \d+: <\+380990000000 \+380503330005 text \[$number\] taken by Gina>/,
		'and fakesmsc received it');
}
else
{
	like($out, qr/Kannel is not installed here .* this step is skipped; \.\/install-deps\.sh as root installs them/s,
		'without Kannel the demo says so and goes on');
}

# the pids of the processes of this user whose command line or open files
# name $d: the demo's cluster, mock gateway, Kannel and sidecars
sub processes_in
{
	my ($d) = @_;
	my @found;
	for my $proc (glob('/proc/[0-9]*'))
	{
		my ($pid) = $proc =~ m{(\d+)$};
		next if $pid == $$;
		my $cmdline = eval { slurp_file("$proc/cmdline") } // next;
		my @files = map { readlink($_) // '' } glob("$proc/fd/*");
		push @found, "$pid: $cmdline" =~ s/\0/ /gr if grep { index($_, $d) >= 0 } $cmdline, @files;
	}
	return @found;
}
is(join("\n", processes_in($dir)), '', 'the demo left no process running');

# the demo again, stopped by SIGTERM once Kannel is up: it stops everything
# it started on its way out
my $stopped = PostgreSQL::Test::Utils::tempdir();
{
	local $ENV{SMSDISPATCH_DEMO_DIR} = $stopped;
	local $ENV{PG_CONFIG} = $pg_config;
	my $h = IPC::Run::start([ 'sh', "$top/test/demo.sh" ], '<', \undef,
		'>', "$stopped.out", '2>', "$stopped.err", IPC::Run::timeout(300));
	my $marker = -x '/usr/sbin/bearerbox' ? "-- Kannel's delivery reports" : '== On-call rotation';
	ok(poll_until(sub { -e "$stopped.out" && index(slurp_file("$stopped.out"), $marker) >= 0 }, 120),
		"the second demo reached \"$marker\"");
	$h->signal('TERM');
	$h->finish;
	isnt($h->result, 0, 'the demo stopped by SIGTERM exits non-zero');
}
is(join("\n", processes_in($stopped)), '', 'the demo stopped midway left no process running');

done_testing();

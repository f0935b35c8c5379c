# The daily report's crontab in docs/operations.md works as printed: run the way
# cron runs it (its environment lines, "\%" read as "%", each command through
# /bin/sh), its first line writes yesterday's HTML report to a file named after
# yesterday, with yesterday's SMS and nothing of the days around it, and its
# second line hands that file to sendmail -t as an HTML mail to MAILTO. When
# the report cannot be made, no mail leaves.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(strftime);
use SmsdispatchReports qw(start_node);

# one day for the report, the file name and the test data
$ENV{TZ} = 'UTC';
$ENV{PGTZ} = 'UTC';

my $docs = slurp_file(dirname(__FILE__) . '/../../docs/operations.md');
my ($crontab) = $docs =~ /^```\n(# \/etc\/cron\.d\/smsdispatch-report\n.*?)^```/ms;
ok(defined $crontab, 'docs/operations.md shows the report crontab');

# cron's reading of a crontab line: NAME=value, or five time fields, the user
# and the command, whose "\%" is a "%" and whose bare "%" would end it
my (%env, @jobs);
for my $line (split /\n/, $crontab // '')
{
	next if $line =~ /^\s*(#|$)/;
	if ($line =~ /^(\w+)=(.*)$/)
	{
		$env{$1} = $2;
		next;
	}
	my ($minute, $hour, $dom, $month, $dow, $user, $command) = split ' ', $line, 7;
	unlike($command, qr/(?<!\\)%/, "no bare % in the command at $hour:$minute");
	push @jobs, { at => "$hour:$minute", days => "$dom $month $dow", user => $user,
		command => $command =~ s/\\%/%/gr };
}
is_deeply([ map { "$_->{at} $_->{days} $_->{user}" } @jobs ],
	[ '6:0 * * * postgres', '6:5 * * * postgres' ],
	'two daily jobs as postgres: the file at 06:00, the mail at 06:05');
is_deeply([ sort keys %env ], [qw(MAILTO PATH PGDATABASE REPORTS)],
	'the crontab sets PATH, PGDATABASE, REPORTS and MAILTO');
like($jobs[0]{command} // '', qr/sms_report_html/, 'the first job runs sms_report_html');
like($jobs[1]{command} // '', qr/sendmail -t/, 'the second job pipes to sendmail -t');

my $node = start_node('cron_report', 'app');
# SMS of yesterday (2 delivered, 1 expired), of the day before and of today
$node->safe_psql('app', q{
	INSERT INTO verification.sms_log (phone_number, type, body, send_state,
		gateway_status, inserted_at, status_changed_at)
	SELECT '+380500000001', 'verification', 'code', 'submitted', s, t, t + interval '5 s'
	  FROM (VALUES ('Delivered', current_date - 1 + time '10:00'),
				   ('Delivered', current_date - 1 + time '11:00'),
				   ('Expired', current_date - 1 + time '12:00'),
				   ('Delivered', current_date - 2 + time '10:00'),
				   ('Delivered', current_date + time '00:00:01')) AS v(s, t);
});

# the jobs' environment: the crontab's, with this cluster's database, a
# reports directory of the test, and a sendmail that keeps what it is given
my $dir = PostgreSQL::Test::Utils::tempdir;
my $bin = "$dir/bin";
mkdir $bin or die "$bin: $!";
my $sendmail = "$bin/sendmail";
open my $fh, '>', $sendmail or die "$sendmail: $!";
print $fh "#!/bin/sh\nprintf '%s\\n' \"\$*\" > \"$dir/sendmail.args\"\ncat > \"$dir/sendmail.mail\"\n";
close $fh;
chmod 0755, $sendmail or die "$sendmail: $!";
my ($pgbin) = grep { -x "$_/psql" } split /:/, $ENV{PATH};
my %job_env = (%env, PGDATABASE => 'app', REPORTS => "$dir/reports",
	PATH => "$bin:$pgbin:$env{PATH}", PGHOST => $node->host, PGPORT => $node->port);

# runs one job's command as cron would: /bin/sh -c, in the job's environment
sub run_job
{
	my ($command) = @_;
	local %ENV = (%ENV, %job_env);
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ '/bin/sh', '-c', $command ], '<', \undef, '>', \$stdout,
		'2>', \$stderr);
	return ($ok, ($stdout // '') . ($stderr // ''));
}

# the reports directory, made by the documented install -d for REPORTS
my ($install) = $docs =~ /\(`(install -d [^`]*)`\)/;
like($install // '', qr/^install -d -o postgres -m 0750 \Q$env{REPORTS}\E$/,
	'the docs make the directory REPORTS names, owned by postgres, 0750');
SKIP:
{
	skip 'install -o postgres needs the tests to run as postgres', 2
	  unless getpwuid($<) eq 'postgres';
	my ($made) = run_job(($install // 'false') =~ s/\Q$env{REPORTS}\E$/$job_env{REPORTS}/r);
	ok($made, 'install -d made the reports directory');
	is(sprintf('%04o', (stat $job_env{REPORTS})[2] & 07777), '0750', 'mode 0750');
}
mkdir $job_env{REPORTS} unless -d $job_env{REPORTS};

my $yesterday = strftime('%F', gmtime(time - 86400));
my $file = "$dir/reports/smsdispatch-$yesterday.html";

my ($ok, $output) = run_job($jobs[0]{command});
ok($ok, 'the report job succeeds') or diag($output);
is($output, '', 'and prints nothing (cron would mail it)');
ok(-s $file, "it wrote smsdispatch-$yesterday.html");
my $html = -e $file ? slurp_file($file) : '';
like($html, qr/^<!DOCTYPE html>/, 'an HTML page');
like($html, qr/<title>SMS report [^<]*\Q$yesterday\E/, "titled with yesterday, $yesterday");
my ($row) = $html =~ m{<tr><td>\Q$yesterday\E</td><td>verification</td>(.*?)</tr>};
my @cells = ($row // '') =~ m{<td[^>]*>([^<]*)</td>}g;
is_deeply([ @cells[0 .. 3] ], [ 'ip2sms', 3, 3, 2 ],
	"yesterday's row of the delivery table: ip2sms, 3 logged, 3 sent, 2 delivered")
  or diag($row // 'no row for yesterday');
my @days = $html =~ m{<tr><td>(\d{4}-\d\d-\d\d)</td>}g;
is_deeply([ grep { $_ ne $yesterday } @days ], [], 'and no row of another day');

($ok, $output) = run_job($jobs[1]{command});
ok($ok, 'the mail job succeeds') or diag($output);
is(-e "$dir/sendmail.args" ? slurp_file("$dir/sendmail.args") : '', "-t\n", 'it calls sendmail -t');
my $mail = -e "$dir/sendmail.mail" ? slurp_file("$dir/sendmail.mail") : '';
my ($head, $body) = split /\n\n/, $mail, 2;
is($head, "To: $env{MAILTO}\nSubject: SMS report $yesterday\nMIME-Version: 1.0\n"
	  . "Content-Type: text/html; charset=utf-8",
	'an HTML mail to MAILTO with yesterday in its subject');
is($body, $html, 'holding the report file');

# no report: the report job fails loudly, the mail job sends nothing
unlink $file, "$dir/sendmail.mail";
$node->safe_psql('postgres', 'DROP DATABASE app');
($ok, $output) = run_job($jobs[0]{command});
ok(!$ok, 'without its database the report job fails');
like($output, qr/database "app" does not exist/, 'and says why (cron mails it)');
run_job($jobs[1]{command});
ok(!-e "$dir/sendmail.mail", 'no mail is sent without a report');

$node->stop;
done_testing();

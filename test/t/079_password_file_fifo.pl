# The password file cannot stall the worker. The worker
# opened the file by name after looking at it, without O_NOFOLLOW or
# O_NONBLOCK: a name swapped to a symbolic link to a FIFO in between made
# it wait in open() for a writer, for ever, and send nothing. Now
# - a symbolic link (to a FIFO) is refused as one, naming the file, and a
#   FIFO itself as not a regular file: the SMS stays queued,
#   smsdispatch.channel_health says why, the same worker sends it once a
#   regular file is back;
# - a name swapped between a regular file and a symbolic link to a FIFO
#   as fast as the machine goes, while the worker rereads it at every
#   SIGHUP, never makes it block: afterwards it still sends.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use Fcntl qw(O_WRONLY O_NONBLOCK);
use POSIX qw(mkfifo);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;
use SmsWorkerNode qw(worker_pid);

my $race_s = 5;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $password = 'Pw-079-fifo-secret';
my $mock = Ip2smsMock->new(dir => $dir, password => $password);
my $file = $mock->password_file;
my $node = $mock->node('fifo', "smsdispatch.ip2sms_poll_interval = '1h'\n");
my $fifo = "$dir/password.fifo";
mkfifo($fifo, 0600) or die "mkfifo $fifo: $!";

# how the mock saw the SMS to $phone: 'right' or 'wrong' password, or 'none'
sub auth_of
{
	my ($phone) = @_;
	my @seen = grep { ($_->{to} // '') eq $phone } $mock->log_entries;
	return @seen ? ($seen[-1]{auth} ? 'right' : 'wrong') : 'none';
}

sub wait_auth
{
	my ($phone) = @_;
	my $end = time() + 60;
	while (time() < $end)
	{
		my $auth = auth_of($phone);
		return $auth if $auth ne 'none';
		sleep 0.1;
	}
	return 'none';
}

# whether the server log past offset comes to match re within 30 s
sub log_has
{
	my ($offset, $re) = @_;
	my $end = time() + 30;
	while (time() < $end)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		sleep 0.1;
	}
	return 0;
}

# puts $what (a path) in the password file's place, atomically
sub replace_file
{
	my ($what) = @_;
	rename($what, $file) or die "rename $what: $!";
}

# a fresh regular password file in the file's place (not written through
# whatever is there: a link to the FIFO would block the writer)
sub good_file
{
	open my $fh, '>', "$file.new" or die "$file.new: $!";
	print $fh "$password\n";
	close $fh;
	chmod 0600, "$file.new" or die "chmod: $!";
	replace_file("$file.new");
}

# a symbolic link to the FIFO in the file's place
sub fifo_link
{
	symlink($fifo, "$file.new") or die "symlink: $!";
	replace_file("$file.new");
}

$node->safe_psql('postgres', "SELECT sms_send('+380504100001', 'before')");
is(wait_auth('380504100001'), 'right', 'an SMS goes out with the password from the file');
my $pid = worker_pid($node);

# a symbolic link to a FIFO
my $offset = -s $node->logfile;
fifo_link();
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380504100011', 'behind a link')");
ok(log_has($offset,
	qr/WARNING:.*IP2SMS messages stay queued: cannot use password file "\Q$file\E": it is a symbolic link/),
	'a symbolic link is refused as one, naming the file');
like(slurp_file($node->logfile, $offset),
	qr/LOG:  cannot use password file "\Q$file\E": it is a symbolic link\n.*HINT:  .*not a symbolic link/,
	'the reload refuses it too, with a hint');
is($node->safe_psql('postgres',
	"SELECT state || ': ' || last_error FROM smsdispatch.channel_health WHERE channel = 'ip2sms'"),
	"auth_failed: cannot use password file \"$file\": it is a symbolic link",
	'channel_health says why the channel cannot send');
is($node->safe_psql('postgres',
	"SELECT send_state FROM verification.sms_log WHERE phone_number = '+380504100011'"),
	'queued', 'the SMS stays queued');
is(auth_of('380504100011'), 'none', 'and nothing was sent');
is(worker_pid($node), $pid, 'the worker runs on');
good_file();
is(wait_auth('380504100011'), 'right',
	'once a regular file is back the SMS leaves, without a reload');

# a FIFO itself
$offset = -s $node->logfile;
mkfifo("$file.new", 0600) or die "mkfifo: $!";
replace_file("$file.new");
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380504100021', 'a fifo')");
ok(log_has($offset,
	qr/WARNING:.*cannot use password file "\Q$file\E": it is not a regular file/),
	'a FIFO is refused as not a regular file');
ok($node->poll_query_until('postgres',
	"SELECT last_error LIKE '%it is not a regular file' FROM smsdispatch.channel_health WHERE channel = 'ip2sms'"),
	'channel_health says so');
is(worker_pid($node), $pid, 'the worker runs on');
good_file();
is(wait_auth('380504100021'), 'right', 'and sends once the file is back');

# the race: the name swapped between a regular file and a link to the FIFO
# while the worker rereads it at each SIGHUP. The swapper ends with the
# regular file in place and is waited for.
good_file();
link($file, "$dir/password.regular") or die "link: $!";
symlink($fifo, "$dir/password.link") or die "symlink: $!";
my $swapper = fork();
die "fork: $!" unless defined $swapper;
if ($swapper == 0)
{
	my $end = time() + $race_s;
	while (time() < $end)
	{
		for my $from ("$dir/password.link", "$dir/password.regular")
		{
			link($from, "$file.swap") or POSIX::_exit(1);
			rename("$file.swap", $file) or POSIX::_exit(1);
		}
	}
	POSIX::_exit(0);
}
my $sighups = 0;
my $end = time() + $race_s;
while (time() < $end)
{
	kill 'HUP', $pid;
	$sighups++;
	sleep 0.02;
}
waitpid($swapper, 0);
is($?, 0, "the name was swapped for $race_s s while the worker got $sighups SIGHUPs");
$node->safe_psql('postgres', "SELECT sms_send('+380504100031', 'after the race')");
is(wait_auth('380504100031'), 'right', 'after the race the worker still sends: it never blocked on the FIFO');
is(worker_pid($node), $pid, 'the same worker');

# a worker stuck in open() (the old code) is freed before the server stops
if (sysopen(my $w, $fifo, O_WRONLY | O_NONBLOCK))
{
	close $w;
	diag('a process was waiting in open() on the FIFO');
}

$node->stop;
unlike(slurp_file($node->logfile), qr/\Q$password\E/,
	'the password is nowhere in the server log');
$mock->stop;
done_testing();

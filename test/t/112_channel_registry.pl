# The channel registry: an admin adds, alters and drops Kannel channels with
# smsdispatch.channel_add/channel_alter/channel_drop; every bad input is
# refused with its SQLSTATE and a message naming the field and the value,
# and nothing is written; a registered name is a channel of sms_enqueue and
# sms_send while an unknown one is refused; the view smsdispatch.channels
# shows no secret (a password is only ever a file's path) and readers see
# it, while only admins change the registry.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

# no loopback channel: the SMS of kannel1 stay queued (its password file
# does not exist)
my $node = worker_node('registry', conf => "smsdispatch.loopback_channel = off\n");
$node->safe_psql('postgres', q{
	CREATE ROLE reg_admin LOGIN IN ROLE smsdispatch_admin;
	CREATE ROLE reg_reader LOGIN IN ROLE smsdispatch_reader;
	CREATE ROLE reg_sender LOGIN IN ROLE smsdispatch_sender;
});

# "SQLSTATE: message" of the error $sql raises as $user (admin by default)
sub error_of
{
	my ($sql, $user) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $user // 'reg_admin' ]);
	return 'no error' if $rc == 0 && $err !~ /ERROR/;
	my ($e) = $err =~ /ERROR:\s+(\w{5}: [^\n]*)/;
	return $e // $err;
}

my %good = (url => 'http://127.0.0.1:13013/cgi-bin/sendsms', username => 'smsd',
	password_file => '/etc/postgresql/kannel1.password', from => '+380990000000',
	callback_url => 'http://127.0.0.1:8089');

# jsonb_build_object(...) of %good with %change (undef drops a key)
sub options
{
	my (%change) = @_;
	my %o = (%good, %change);
	return 'jsonb_build_object(' . join(', ',
		map { "'$_', " . (ref $o{$_} ? $o{$_}->[0] : "'$o{$_}'") }
		grep { defined $o{$_} } sort keys %o) . ')';
}

sub add
{
	my ($name, $dialect, $opts) = @_;
	return "SELECT smsdispatch.channel_add('$name', '$dialect', $opts)";
}

# the documented example, as written
is(error_of(q{SELECT smsdispatch.channel_add('kannel1', 'kannel', jsonb_build_object(
    'url', 'http://127.0.0.1:13013/cgi-bin/sendsms', 'username', 'smsd',
    'password_file', '/etc/postgresql/kannel1.password', 'from', '+380990000000',
    'callback_url', 'http://127.0.0.1:8089'));}), 'no error', 'an admin adds kannel1');
is($node->safe_psql('postgres', 'SELECT name, dialect, url, username, password_file, sender, callback_url FROM smsdispatch.channels',
		extra_params => [ '-U', 'reg_reader' ]),
	'kannel1|kannel|http://127.0.0.1:13013/cgi-bin/sendsms|smsd|/etc/postgresql/kannel1.password|+380990000000|http://127.0.0.1:8089',
	'a reader sees it in smsdispatch.channels');
ok(wait_until($node, "SELECT state FROM smsdispatch.channels WHERE name = 'kannel1'", 'auth_failed', 10),
	'once the worker has read the registry, the missing password file makes it auth_failed');
like($node->safe_psql('postgres', "SELECT last_error FROM smsdispatch.channels WHERE name = 'kannel1'",
		extra_params => [ '-U', 'reg_reader' ]),
	qr{^cannot use password file "/etc/postgresql/kannel1.password": },
	'and the reader is told why');
is($node->safe_psql('postgres', q{SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = 'smsdispatch.channels'::regclass AND attnum > 0}),
	'name,dialect,url,username,password_file,sender,callback_url,failover_to,created_at,altered_at,state,state_since,last_error',
	'the view has no column that could hold a secret');

make_list($node, 'noc', 0, [ '+380501111111', 1, '1 hour' ]);
like($node->safe_psql('postgres', "SELECT sms_enqueue('Core router down', 'noc', 'kannel1')",
		extra_params => [ '-U', 'reg_sender' ]),
	qr/^\d{4}$/, "a sender's sms_enqueue takes the registered channel");
is($node->safe_psql('postgres', "SELECT channel FROM verification.sms_log"), 'kannel1',
	'its SMS is queued on kannel1');
like($node->safe_psql('postgres', "SELECT sms_send('+380501111112', 'hi', channel => 'kannel1')",
		extra_params => [ '-U', 'reg_sender' ]),
	qr/^\d+$/, "a sender's sms_send takes it");
is(error_of("SELECT sms_enqueue('x', 'noc', 'kannel2')", 'reg_sender'),
	'22023: unknown channel "kannel2"', 'an unknown channel is refused by sms_enqueue');
is(error_of("SELECT sms_send('+380501111112', 'x', channel => 'kannel2')", 'reg_sender'),
	'22023: unknown channel "kannel2"', 'and by sms_send');

# every bad input: SQLSTATE and message
my @bad = (
	[ add('kannel2', 'smpp', options()), '22023: unknown channel dialect "smpp"', 'unknown dialect' ],
	[ add('kannel2', 'kannel', options(port => '13013')), '22023: unknown option "port" of a kannel channel', 'unknown option key' ],
	(map { [ add('kannel2', 'kannel', options($_ => undef)), qq{22023: option "$_" of a kannel channel is missing}, "missing $_" ] }
		qw(url username password_file callback_url)),
	[ add('kannel2', 'kannel', options(url => 'ftp://127.0.0.1/sendsms')),
		'22023: option "url" of a kannel channel is not an http or https URL: "ftp://127.0.0.1/sendsms"', 'a url that is not http(s)' ],
	[ add('kannel2', 'kannel', options(url => 'http://smsd:secret@127.0.0.1/sendsms')),
		'22023: option "url" of a kannel channel is not an http or https URL: "http://smsd:secret@127.0.0.1/sendsms"', 'a url with credentials' ],
	[ add('kannel2', 'kannel', options(callback_url => 'file:///srv/callback')),
		'22023: option "callback_url" of a kannel channel is not an http or https URL: "file:///srv/callback"', 'a callback_url that is not http(s)' ],
	[ add('kannel2', 'kannel', options(password_file => 'kannel.password')),
		'22023: option "password_file" of a kannel channel is not an absolute path: "kannel.password"', 'a relative password_file' ],
	[ add('kannel2', 'kannel', options(username => [ '42' ])),
		'22023: option "username" of a kannel channel must be a non-empty string, not 42', 'a value that is not a string' ],
	[ "SELECT smsdispatch.channel_add('kannel2', 'kannel', '[1]')",
		'22023: options [1] of a kannel channel are not a JSON object', 'options that are not an object' ],
	(map { [ add($_, 'kannel', options()), qq{42710: channel name "$_" is reserved}, "the name $_" ] }
		qw(ip2sms modem loopback)),
	(map { [ add($_, 'kannel', options()), qq{22023: channel name "$_" is not a valid name}, "the name '$_'" ] }
		('Kannel', '1kannel', 'kannel-1', '', 'k' x 33)),
	[ add('kannel1', 'kannel', options()), '42710: channel "kannel1" exists already', 'a name taken' ],
	[ "SELECT smsdispatch.channel_alter('kannel9', '{}')", '42704: channel "kannel9" is not registered', 'altering an unknown channel' ],
	[ "SELECT smsdispatch.channel_alter('kannel1', '{\"url\": \"gopher://x\"}')",
		'22023: option "url" of a kannel channel is not an http or https URL: "gopher://x"', 'altering to a bad url' ],
	[ "SELECT smsdispatch.channel_alter('kannel1', '{\"username\": null}')",
		'22023: option "username" of a kannel channel is missing', 'altering a required option away' ],
	[ add('kannel2', 'kannel', options(failover_to => 'kannel2')),
		'22023: option "failover_to" of channel "kannel2" names the channel itself', 'a channel failing over to itself' ],
	[ add('kannel2', 'kannel', options(failover_to => 'kannel9')),
		'22023: option "failover_to" of channel "kannel2" names no channel: "kannel9"', 'failing over to no channel' ],
	[ "SELECT smsdispatch.channel_alter('kannel1', '{\"failover_to\": \"kannel1\"}')",
		'22023: option "failover_to" of channel "kannel1" names the channel itself', 'altering to fail over to itself' ],
	[ "SELECT smsdispatch.channel_drop('kannel9')", '42704: channel "kannel9" is not registered', 'dropping an unknown channel' ],
	[ "SELECT smsdispatch.channel_drop('kannel1')", '55006: channel "kannel1" still has 2 queued or sending SMS', 'dropping a channel with queued SMS' ],
);
is(error_of($_->[0]), $_->[1], $_->[2]) for @bad;
like((($node->psql('postgres', "SELECT smsdispatch.channel_drop('kannel1')"))[2]),
	qr/HINT:  Wait until they leave, or move them/, 'the refused drop says what to do');
is($node->safe_psql('postgres', 'SELECT count(*), max(options::text) FROM smsdispatch.channel_registry'),
	'1|' . $node->safe_psql('postgres', 'SELECT ' . options() . '::text'),
	'nothing of the refused calls was written');

# alter: keys replaced, a null removes one
is(error_of("SELECT smsdispatch.channel_alter('kannel1', '{\"from\": null, \"url\": \"https://kannel.example/cgi-bin/sendsms\"}')"),
	'no error', 'an admin alters kannel1');
is($node->safe_psql('postgres', 'SELECT url, sender IS NULL, altered_at IS NOT NULL, username FROM smsdispatch.channels'),
	'https://kannel.example/cgi-bin/sendsms|t|t|smsd', 'the url changed, from is gone, the rest kept');

# privileges: readers and senders change nothing
for my $user ('reg_reader', 'reg_sender')
{
	is(error_of(add('kannel3', 'kannel', options()), $user),
		'42501: permission denied for function channel_add', "$user cannot add");
	is(error_of("SELECT smsdispatch.channel_alter('kannel1', '{}')", $user),
		'42501: permission denied for function channel_alter', "$user cannot alter");
	is(error_of("SELECT smsdispatch.channel_drop('kannel1')", $user),
		'42501: permission denied for function channel_drop', "$user cannot drop");
	is(error_of('SELECT options FROM smsdispatch.channel_registry', $user),
		'42501: permission denied for table channel_registry', "$user cannot read the table");
}

# failover_to: ip2sms, modem or another registered channel, shown in the
# view; a channel another fails over to is not dropped
is(error_of("SELECT smsdispatch.channel_alter('kannel1', '{\"failover_to\": \"ip2sms\"}')"),
	'no error', 'kannel1 fails over to ip2sms');
is(error_of(add('kannel2', 'kannel', options(failover_to => 'kannel1'))), 'no error',
	'kannel2 fails over to kannel1');
is($node->safe_psql('postgres', q{SELECT string_agg(name || ' ' || failover_to, ', ' ORDER BY name) FROM smsdispatch.channels},
		extra_params => [ '-U', 'reg_reader' ]),
	'kannel1 ip2sms, kannel2 kannel1', 'readers see where each fails over to');
$node->safe_psql('postgres', "UPDATE verification.sms_log SET send_state = 'failed' WHERE channel = 'kannel1'");
is(error_of("SELECT smsdispatch.channel_drop('kannel1')"),
	'55006: channel "kannel1" is the failover_to of channel kannel2', 'a failover target is not dropped');
like((($node->psql('postgres', "SELECT smsdispatch.channel_drop('kannel1')"))[2]),
	qr/HINT:  Change that first: SELECT smsdispatch.channel_alter\('kannel2', jsonb_build_object\('failover_to', NULL\)\)/,
	'the refused drop says what to change');
is(error_of("SELECT smsdispatch.channel_drop('kannel2')"), 'no error', 'an admin drops kannel2');

# once its SMS are gone the channel drops, and its name is unknown again
is(error_of("SELECT smsdispatch.channel_drop('kannel1')"), 'no error', 'an admin drops kannel1');
is($node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.channels'), '0', 'it is gone');
is(error_of("SELECT sms_send('+380501111112', 'x', channel => 'kannel1')", 'reg_sender'),
	'22023: unknown channel "kannel1"', 'its name is no channel any more');

done_testing();

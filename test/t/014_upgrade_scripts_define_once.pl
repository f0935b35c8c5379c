# Every upgrade script of the chain (smsdispatch--A--B.sql) makes each object
# once: ALTER EXTENSION smsdispatch UPDATE from A to B, watched by event
# triggers, creates no object twice (CREATE FUNCTION, CREATE OR REPLACE
# FUNCTION, CREATE VIEW, CREATE INDEX, CREATE TABLE, ...: an overload, with
# other argument types, is another object) and drops none twice (an index or
# a constraint dropped and made again, then dropped and made again). And no
# shipped SQL file (the scripts at the top of the tree and the src/sql
# fragments; the released scripts in src/sql/released are frozen) carries a
# tag of the work that made it ("issue 14", "stop 3") in a comment.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $top = "$FindBin::RealBin/../..";

my @scripts = sort map { s{.*/}{}r } glob("$top/smsdispatch--*--*.sql");
ok(scalar(grep { $_ eq 'smsdispatch--1.0--1.1.sql' } @scripts),
	'the chain of upgrade scripts starts with 1.0 -> 1.1: ' . join(' ', @scripts));

my $node = worker_node('define_once', no_extension => 1);

# The log of what each script does: every command of ddl_command_end with
# the objects it made, and every object sql_drop saw dropped by name.
my $audit = q{
CREATE SCHEMA ddl_audit;
CREATE TABLE ddl_audit.command (
	n bigserial PRIMARY KEY,
	command_tag text NOT NULL,
	object_type text,
	object_identity text,
	in_extension boolean
);
CREATE FUNCTION ddl_audit.record_commands() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO ddl_audit.command (command_tag, object_type, object_identity, in_extension)
	SELECT c.command_tag, c.object_type, c.object_identity, c.in_extension
	  FROM pg_event_trigger_ddl_commands() c;
END;
$$;
CREATE FUNCTION ddl_audit.record_drops() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO ddl_audit.command (command_tag, object_type, object_identity)
	SELECT 'DROP', d.object_type, d.object_identity
	  FROM pg_event_trigger_dropped_objects() d
	 WHERE d.original;
END;
$$;
CREATE EVENT TRIGGER ddl_audit_commands ON ddl_command_end
	EXECUTE FUNCTION ddl_audit.record_commands();
CREATE EVENT TRIGGER ddl_audit_drops ON sql_drop
	EXECUTE FUNCTION ddl_audit.record_drops();
};

foreach my $script (@scripts)
{
	my ($from, $to) = $script =~ /^smsdispatch--(.+)--(.+)\.sql$/
	  or die "no versions in $script";
	my $db = "from_$from" =~ s/\W/_/gr;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $audit);
	$node->safe_psql($db, "CREATE EXTENSION smsdispatch VERSION '$from'");
	# the event triggers see the commands of an extension's script, as
	# commands in an extension (CREATE EXTENSION itself is not)
	is( $node->safe_psql($db,
			"SELECT count(*) > 50 AND bool_and(in_extension)
			   FROM ddl_audit.command
			  WHERE command_tag LIKE 'CREATE %' AND command_tag <> 'CREATE EXTENSION'"),
		't', "$from: the event triggers record what CREATE EXTENSION's script makes");
	my $start = $node->safe_psql($db, 'SELECT max(n) FROM ddl_audit.command');

	$node->safe_psql($db, "ALTER EXTENSION smsdispatch UPDATE TO '$to'");
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'smsdispatch'"),
		$to, "$script: ALTER EXTENSION UPDATE TO '$to'");

	my $twice = $node->safe_psql(
		$db, qq{
		SELECT string_agg(format('%s %s: %s', object_type, object_identity, commands),
						  E'\\n' ORDER BY object_type, object_identity)
		  FROM (SELECT object_type, object_identity,
					   string_agg(command_tag, ', ' ORDER BY n) AS commands
				  FROM ddl_audit.command
				 WHERE n > $start AND object_identity IS NOT NULL
				   AND (command_tag LIKE 'CREATE %' OR command_tag = 'DROP')
				 GROUP BY object_type, object_identity
				HAVING count(*) FILTER (WHERE command_tag LIKE 'CREATE %') > 1
					OR count(*) FILTER (WHERE command_tag = 'DROP') > 1) o});
	is($twice, '', "$script makes each object once")
	  or diag("$script makes these objects more than once:\n$twice");
}

# Internal tags in the comments of the shipped SQL (a comment inside a
# function's body is checked too: none of the files has one there).
my @shipped = (glob("$top/smsdispatch--*.sql"), glob("$top/src/sql/*.sql"));
ok(scalar(grep { m{/src/sql/[^/]+\.sql$} } @shipped) > 5, 'the src/sql fragments are found');
my @tagged;
foreach my $file (@shipped)
{
	my $text = slurp_file($file);
	my $name = $file =~ s{^\Q$top\E/}{}r;
	my $line = 0;
	foreach (split /\n/, $text)
	{
		$line++;
		push @tagged, "$name:$line: $_"
		  if m{(--|/\*).*\b(issue\s*#?\d+|stop\s*#?\d+)}i;
	}
}
is(join("\n", @tagged), '', 'no shipped SQL file has an internal tag (issue N, stop N) in a comment')
  or diag("tagged comments:\n" . join("\n", @tagged));

# The fragments: each number once, and each grant in the fragment that
# makes its object (a sequence goes with its bigserial table); a revoke over
# a whole schema (99_public.sql) and the roles' memberships name no object.
my @fragments = sort glob("$top/src/sql/*.sql");
my %numbered;
push @{ $numbered{ (m{/(\d+)_[a-z_0-9]+\.sql$})[0] // $_ } }, $_ =~ s{.*/}{}r foreach @fragments;
is(join(' ', map { join('=', @{ $numbered{$_} }) } grep { @{ $numbered{$_} } > 1 } sort keys %numbered),
	'', 'each fragment has a number of its own');
my @astray;
foreach my $file (@fragments)
{
	my $name = $file =~ s{.*/}{}r;
	# the objects made (schema verification inside a DO block), and the
	# statements outside dollar quotes
	my $all = slurp_file($file) =~ s/--[^\n]*//gr;
	my $text = $all =~ s/\$\$.*?\$\$//gsr;
	my %made;
	$made{ lc $1 } = 1
	  while $all =~ /CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|TABLE|VIEW|SCHEMA|DOMAIN)\s+([\w.@]+)/gi;
	$made{"$_\_id_seq"} = 1 foreach grep { !/\(/ } keys %made;
	foreach my $statement (split /;/, $text)
	{
		next unless $statement =~ /^\s*(?:GRANT|REVOKE)\b.*?\bON\s+(?!ALL\b)(.*?)\s+(?:TO|FROM)\s/si;
		my $objects = $1 =~ s/^(?:FUNCTION|PROCEDURE|SEQUENCE|SCHEMA|TABLE)\s+//ir;
		$objects =~ s/\([^()]*\)//g;
		foreach my $object (map { s/^\s+|\s+$//gr } split /,/, $objects)
		{
			my $qualified = $object =~ /\./ ? lc $object : "smsdispatch.\L$object";
			push @astray, "$name: $object"
			  unless $made{ lc $object } || $made{$qualified}
			  || ($object !~ /\./ && grep { /^(?:smsdispatch|verification)\.\Q$object\E$/ } keys %made);
		}
	}
}
is(join("\n", @astray), '', 'every grant of a fragment is on an object that fragment makes')
  or diag("grants away from their objects:\n" . join("\n", @astray));

$node->stop;
done_testing();

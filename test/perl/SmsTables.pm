# The tables smsdispatch keeps data in, and a digest of their rows: the tests
# that move a database (pg_dump, ALTER EXTENSION UPDATE, pg_upgrade) compare
# the digests before and after.
package SmsTables;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(%extension_tables table_digests table_columns table_last_ids);

# every table of the extension, with the column that orders its rows
our %extension_tables = (
	'smsdispatch.recipient_list' => 'id',
	'smsdispatch.list_member' => 'id',
	'smsdispatch.message' => 'id',
	'smsdispatch.message_recipient' => 'id',
	'smsdispatch.event' => 'id',
	'smsdispatch.inbox' => 'id',
	'smsdispatch.number_cursor' => 'only_row',
	'verification.sms_log' => 'id',
);

# One text per table: its row count and a digest of all its rows. With
# $columns (a table_columns() of earlier), only those columns count: a
# table that gained a column since still digests as it did. With $upto (a
# table_last_ids() of earlier), only the rows that existed then count: the
# rows a running worker adds since do not, while a row changed or gone does.
sub table_digests
{
	my ($node, $db, $columns, $upto) = @_;
	my %digest;
	foreach my $t (sort keys %extension_tables)
	{
		my $key = $extension_tables{$t};
		my $row = $columns ? "ROW($columns->{$t})" : 't';
		my $where = ($upto && defined $upto->{$t}) ? "WHERE t.$key <= $upto->{$t}" : '';
		$digest{$t} = $node->safe_psql($db,
			"SELECT count(*) || ' ' || coalesce(md5(string_agg(${row}::text, '|' ORDER BY t.$key)), '-') FROM $t t $where");
	}
	return \%digest;
}

# The last id of each table keyed by one, for table_digests().
sub table_last_ids
{
	my ($node, $db) = @_;
	my %last;
	foreach my $t (sort keys %extension_tables)
	{
		next unless $extension_tables{$t} eq 'id';
		$last{$t} = $node->safe_psql($db, "SELECT coalesce(max(id), 0) FROM $t");
	}
	return \%last;
}

# The columns of each table as they are now, for table_digests().
sub table_columns
{
	my ($node, $db) = @_;
	my %columns;
	foreach my $t (sort keys %extension_tables)
	{
		$columns{$t} = $node->safe_psql($db,
			"SELECT string_agg('t.' || quote_ident(attname), ', ' ORDER BY attnum)
			   FROM pg_attribute
			  WHERE attrelid = '$t'::regclass AND attnum > 0 AND NOT attisdropped");
	}
	return \%columns;
}

1;

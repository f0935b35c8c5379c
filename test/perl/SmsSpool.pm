# Dropping files into a spool directory the way a producer must: written
# under a hidden temporary name, then renamed, so that the importer never
# sees a half-written file.
package SmsSpool;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(drop_spool_file);

# Writes $content as $dir/$name. Options: mode (the file's permissions, to
# test unreadable files) and mtime (seconds since the epoch, to test the
# age limit).
sub drop_spool_file
{
	my ($dir, $name, $content, %opt) = @_;
	my $tmp = "$dir/.$name.tmp";
	open(my $fh, '>', $tmp) or die "$tmp: $!";
	print $fh $content;
	close($fh);
	chmod($opt{mode}, $tmp) if defined $opt{mode};
	utime($opt{mtime}, $opt{mtime}, $tmp) if defined $opt{mtime};
	rename($tmp, "$dir/$name") or die "rename $tmp: $!";
	return;
}

1;

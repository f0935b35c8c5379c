# sms_report_html() rendered by headless Chromium: the page loads without a
# single request leaving the file, its three charts are drawn, and at
# 1,200 px nothing is cut: no table is wider than its box, the page no wider
# than the window.
use strict;
use warnings;
use Compress::Zlib;
use File::Copy;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsdispatchReports qw(start_node fill_report_data free_port);

my ($chromium) = grep { -x } map { "$_/chromium" } split /:/, $ENV{PATH};
BAIL_OUT('chromium is not in PATH: run install-deps.sh') unless $chromium;

my $node = start_node('report', 'reports');
fill_report_data($node, 'reports');
$node->safe_psql('reports', q{SELECT sms_enqueue('Disk <full> & "hot" on db1', 'oncall')});
# a closed alarm still in its number's quarantine: in smsdispatch.queue, not
# among the report's open alarms
my $closed = $node->safe_psql('reports', q{SELECT sms_enqueue('closed one', 'oncall')});
$node->safe_psql('reports', qq{SELECT sms_cancel('$closed')});

my $html = $node->safe_psql('reports',
	q{SELECT sms_report_html(now() - interval '3 days', now())});
my $dir = PostgreSQL::Test::Utils::tempdir;
my $report = "$dir/report.html";
write_file($report, $html);

# the page itself: charts, tables, escaping, nothing that points outside
is(scalar(() = $html =~ /<svg /g), 3, 'three inline SVG charts');
like($html, qr/<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">/,
	'a CSP forbids every load');
unlike($html, qr{https?:|//|\bsrc=|\bhref=|url\(|\@import|<script|<link|<img|<iframe|<object}i,
	'no URL, script, link or embedded resource');
like($html, qr/Disk &lt;full&gt; &amp; &quot;hot&quot; on db1/, 'alarm text is escaped');
like($html, qr/Alice &lt;on call&gt;/, 'recipient name is escaped');
for my $caption ('Delivery per day, type and channel', 'Failures per day, type and channel',
	'Gateway requests per hour', 'Gateway answers per hour',
	'Escalation per recipient list', 'Open alarms now')
{
	like($html, qr/<caption>\Q$caption\E<\/caption>/, "table \"$caption\"");
}
my %daily;
$daily{$1} += $2 while $html =~ /<title>\d\d-\d\d, (\w+): (\d+) SMS<\/title>/g;
# failed: 12 in the data, and the cancelled alarm's SMS, withdrawn
is_deeply(\%daily, { delivered => 69, failed => 13, pending => 2 }, 'daily bars add up');
like($html, qr/<th>delivery_<wbr>ratio<\/th>/, 'table headers, breakable at an underscore');
like($html, qr/<th>error_<wbr>rate<\/th>/, 'an error rate column');

# what people read: times to the minute or second, words as in the tables
like($html, qr/<title>SMS report from \d{4}-\d\d-\d\d \d\d:\d\d to \d{4}-\d\d-\d\d \d\d:\d\d UTC<\/title>/,
	'the title shows the range to the minute');
unlike($html, qr/\d\d:\d\d:\d\d\.\d/, 'no timestamp with fractions of a second');
unlike($html, qr/<td>\d{4}-\d\d-\d\dT/, 'no ISO 8601 timestamp in the tables');
like($html, qr/<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<\/td>/, 'table timestamps to the second');
like($html, qr/<text [^>]*>send_unknown<\/text>/, 'chart legend names send_unknown as the table does');
unlike($html, qr/>lost</, 'no "lost" in the legend');
my ($open_alarms) = $html =~ /<caption>Open alarms now<\/caption>(.*?)<\/table>/s;
like($open_alarms, qr/Disk &lt;full&gt;/, 'the open alarm is listed');
unlike($open_alarms, qr/closed one|<td>$closed<\/td>/, 'the closed alarm is not');
like($html, qr/<title>level 2, median: 400 seconds<\/title>/, 'ack time bar of level 2');

# Chromium: no page request, checked on the page as is, on the page without
# its CSP (so that the CSP does not hide a reference), and on a control page
# that makes one request to a closed local port, which the check must see.
my $port = free_port();
(my $no_csp = $html) =~ s/<meta http-equiv="Content-Security-Policy"[^>]*>//;
isnt($no_csp, $html, 'CSP removed for the second load');
write_file("$dir/no_csp.html", $no_csp);
(my $probe = $no_csp) =~ s{<body>}{<body><img src="http://127.0.0.1:$port/probe.png" alt="">};
write_file("$dir/probe.html", $probe);

my %requests;
for my $page ('report', 'no_csp', 'probe')
{
	render($page);
	$requests{$page} = page_requests("$dir/$page.netlog.json");
}
is_deeply($requests{report}, [], 'the report makes no request');
is_deeply($requests{no_csp}, [], 'the report makes no request even without its CSP');
is_deeply($requests{probe}, ["http://127.0.0.1:$port/probe.png"],
	'the control page request is seen');

# at 1,200 px: the page's scroll width and each table box's, measured by a
# script added to a copy of the page (the report itself runs none)
my $measure = $no_csp;
$measure =~ s{</body>}{<script>
document.title = 'widths ' + document.documentElement.scrollWidth + ' ' +
  [].map.call(document.querySelectorAll('div.scroll'),
    function (d) { return d.scrollWidth + '/' + d.clientWidth; }).join(' ');
</script></body>};
write_file("$dir/measure.html", $measure);
my $dom = dump_dom('measure', 1200);
my ($page_width, @boxes) = $dom =~ /<title>widths (\d+) ([\d\/ ]*)<\/title>/
  ? ($1, split / /, $2) : (undef);
ok(defined $page_width, 'the page was measured') or diag($dom);
cmp_ok($page_width // 9999, '<=', 1200, 'page scroll width at most 1,200 px');
is(scalar(@boxes), 6, 'six tables measured');
for my $i (0 .. $#boxes)
{
	my ($scroll, $client) = split m{/}, $boxes[$i];
	cmp_ok($scroll, '<=', $client, "table " . ($i + 1) . " fits its box at 1,200 px ($boxes[$i])");
}

# the screenshot: not blank, and each chart's colours are painted
my $png = read_png("$dir/report.png");
ok($png->{width} >= 800 && $png->{height} >= 1600, "screenshot is $png->{width}x$png->{height}");
cmp_ok(scalar(keys %{ $png->{colours} }), '>', 20, 'screenshot is not blank');
my %chart_colour = (
	'delivered bars' => '2e7d32',
	'failed bars' => 'c62828',
	'delivery time bars' => '1565c0',
	'ack median bars' => '00838f',
	'ack p95 bars' => '6a1b9a');
for my $what (sort keys %chart_colour)
{
	cmp_ok($png->{colours}{ $chart_colour{$what} } // 0, '>', 100,
		"$what painted (#$chart_colour{$what})");
}

$node->stop;
done_testing();

# Runs headless Chromium on $dir/$page.html with the extra options; returns
# its standard output. No host name resolves, so even Chromium's own
# background requests stay on this machine.
sub chromium
{
	my ($page, @extra) = @_;
	my @cmd = ($chromium, '--headless', '--no-sandbox', '--disable-gpu',
		'--disable-background-networking', '--disable-component-update',
		'--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
		'--host-resolver-rules=MAP * ~NOTFOUND',
		"--user-data-dir=$dir/profile-$page", @extra, "file://$dir/$page.html");
	local $ENV{HOME} = $dir;
	my ($out, $err);
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(120))
	  or diag("chromium exited with $?: $err");
	return $out // '';
}

# Renders $dir/$page.html to $dir/$page.png, 1,200 px wide, recording
# Chromium's net log.
sub render
{
	my ($page) = @_;
	chromium($page, "--log-net-log=$dir/$page.netlog.json",
		'--window-size=1200,2200', "--screenshot=$dir/$page.png");
	ok(-s "$dir/$page.png", "$page rendered to PNG");
	return;
}

# The DOM of $dir/$page.html after load, in a window $width px wide.
sub dump_dom
{
	my ($page, $width) = @_;
	return chromium($page, "--window-size=$width,2000", '--dump-dom');
}

# URLs of the requests a page made: those with an initiator (the browser's
# own requests have "not an origin"), apart from the page's own file.
sub page_requests
{
	my ($file) = @_;
	my $log = decode_json(slurp_file($file));
	my %type = reverse %{ $log->{constants}{logEventTypes} };
	my %seen;
	for my $event (@{ $log->{events} })
	{
		next unless $type{ $event->{type} } eq 'URL_REQUEST_START_JOB';
		my $p = $event->{params} // {};
		next unless defined $p->{url} && defined $p->{initiator};
		next if $p->{initiator} eq 'not an origin';
		next if $p->{url} =~ m{^file://};
		$seen{ $p->{url} } = 1;
	}
	return [ sort keys %seen ];
}

sub write_file
{
	my ($file, $text) = @_;
	open my $fh, '>:raw', $file or die "cannot write $file: $!";
	print $fh $text;
	close $fh;
	return;
}

# Decodes an 8-bit RGB or RGBA PNG; returns its size and a count of pixels
# per colour (hex rrggbb).
sub read_png
{
	my ($file) = @_;
	my $data = slurp_file($file);
	die "$file is not a PNG" unless substr($data, 0, 8) eq "\x89PNG\r\n\x1a\n";
	my ($pos, $idat, $w, $h, $depth, $ctype) = (8, '');
	while ($pos < length $data)
	{
		my ($len, $kind) = unpack('N a4', substr($data, $pos, 8));
		my $body = substr($data, $pos + 8, $len);
		($w, $h, $depth, $ctype) = unpack('N N C C', $body) if $kind eq 'IHDR';
		$idat .= $body if $kind eq 'IDAT';
		$pos += 12 + $len;
	}
	die "unsupported PNG (depth $depth, colour type $ctype)"
	  unless $depth == 8 && ($ctype == 2 || $ctype == 6);
	my $bpp = $ctype == 6 ? 4 : 3;
	my $raw = uncompress($idat) // die "cannot inflate $file";
	my $stride = $w * $bpp;
	my @prev = (0) x $stride;
	my %colours;
	for my $y (0 .. $h - 1)
	{
		my $filter = ord(substr($raw, $y * ($stride + 1), 1));
		my @cur = unpack('C*', substr($raw, $y * ($stride + 1) + 1, $stride));
		for my $i (0 .. $stride - 1)
		{
			my $a = $i >= $bpp ? $cur[ $i - $bpp ] : 0;
			my $b = $prev[$i];
			my $c = $i >= $bpp ? $prev[ $i - $bpp ] : 0;
			my $add =
				$filter == 1 ? $a
			  : $filter == 2 ? $b
			  : $filter == 3 ? int(($a + $b) / 2)
			  : $filter == 4 ? paeth($a, $b, $c)
			  : 0;
			$cur[$i] = ($cur[$i] + $add) & 0xff;
		}
		for (my $i = 0; $i < $stride; $i += $bpp)
		{
			$colours{ sprintf('%02x%02x%02x', @cur[ $i .. $i + 2 ]) }++;
		}
		@prev = @cur;
	}
	return { width => $w, height => $h, colours => \%colours };
}

sub paeth
{
	my ($a, $b, $c) = @_;
	my $p = $a + $b - $c;
	my ($pa, $pb, $pc) = (abs($p - $a), abs($p - $b), abs($p - $c));
	return $a if $pa <= $pb && $pa <= $pc;
	return $b if $pb <= $pc;
	return $c;
}

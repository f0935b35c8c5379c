# sms_report_html() rendered by headless Chromium: the page loads without a
# single request leaving the file, and its three charts are drawn.
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
for my $caption ('Delivery per day, type and channel', 'Gateway per hour',
	'Escalation per recipient list', 'Queue now')
{
	like($html, qr/<caption>\Q$caption\E<\/caption>/, "table \"$caption\"");
}
my %daily;
$daily{$1} += $2 while $html =~ /<title>\d\d-\d\d, (\w+): (\d+) SMS<\/title>/g;
is_deeply(\%daily, { delivered => 69, failed => 12, pending => 2 }, 'daily bars add up');
like($html, qr/<th>delivery_ratio<\/th>/, 'table headers');
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

# Renders $dir/$page.html to $dir/$page.png, recording Chromium's net log.
# No host name resolves, so even Chromium's own background requests stay on
# this machine.
sub render
{
	my ($page) = @_;
	my @cmd = ($chromium, '--headless', '--no-sandbox', '--disable-gpu',
		'--disable-background-networking', '--disable-component-update',
		'--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
		'--host-resolver-rules=MAP * ~NOTFOUND',
		"--user-data-dir=$dir/profile-$page",
		"--log-net-log=$dir/$page.netlog.json",
		'--window-size=1000,2200', "--screenshot=$dir/$page.png",
		"file://$dir/$page.html");
	local $ENV{HOME} = $dir;
	my ($out, $err);
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(120))
	  or diag("chromium exited with $?: $err");
	ok(-s "$dir/$page.png", "$page rendered to PNG");
	return;
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

# The high-availability tests' cluster (test/t/13*.pl): one etcd on
# loopback, two PostgreSQL nodes under Patroni with smsdispatch preloaded,
# both pointed at one mock IP2SMS gateway. Each node's Patroni YAML is the
# one of docs/operations.md ("High availability"), with only what belongs to
# this machine replaced: addresses and free ports, directories, the
# binaries of pg_config --bindir, short timings so that a failover takes
# seconds, the mock's URLs and password file, and no watchdog device.
# Started once per test file; every process it started is stopped by pid
# at the end.
package PatroniCluster;

use strict;
use warnings;
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();
use Time::HiRes qw(time usleep);

my $top = dirname(dirname(dirname(__FILE__)));

# The Patroni YAML of docs/operations.md, as printed.
sub doc_yaml
{
	my $doc = slurp_file("$top/docs/operations.md");
	my ($yaml) = $doc =~ /^## High availability\n.*?^```yaml\n(.*?)^```/ms
	  or die "docs/operations.md has no Patroni YAML under \"High availability\"";
	return $yaml;
}

# Writes doc_yaml with the overrides (a hash merged key by key) to $file,
# through python3's yaml (Patroni's own parser), so that a YAML the doc
# prints wrong fails here as it would for Patroni.
sub write_yaml
{
	my ($file, $overrides) = @_;
	my $doc = "$file.doc";
	open my $fh, '>', $doc or die "$doc: $!";
	print $fh doc_yaml();
	close $fh;
	my $merge = <<'EOF';
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
def merge(into, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
merge(doc, json.loads(sys.argv[2]))
yaml.safe_dump(doc, open(sys.argv[3], "w"), default_flow_style=False)
EOF
	IPC::Run::run([ 'python3', '-c', $merge, $doc, encode_json($overrides), $file ])
	  or die "writing $file failed";
}

# Starts a program with its output in $log; returns its pid.
sub spawn
{
	my ($log, @cmd) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log or die "$log: $!";
		open STDERR, '>&', \*STDOUT;
		exec @cmd or die "exec $cmd[0]: $!";
	}
	return $pid;
}

# PatroniCluster->new(mock => $mock, synchronous_mode => 0|1,
#                     parameters => { more postgresql.parameters })
sub new
{
	my ($class, %opt) = @_;
	# a missing package fails the test, it never skips it
	for my $program ('etcd', 'patroni', 'patronictl')
	{
		grep { -x "$_/$program" } split /:/, $ENV{PATH}
		  or die "$program is not installed: run ./install-deps.sh (Debian packages patroni, etcd-server)";
	}
	my $self = bless { dir => PostgreSQL::Test::Utils::tempdir(), %opt }, $class;
	my $http = HTTP::Tiny->new(timeout => 2);
	$self->{http} = $http;

	# etcd, v3 API (Patroni's etcd3), on two free loopback ports
	my ($client, $peer) = (PostgreSQL::Test::Cluster::get_free_port(),
		PostgreSQL::Test::Cluster::get_free_port());
	$self->{etcd_url} = "http://127.0.0.1:$client";
	$self->{etcd_pid} = spawn("$PostgreSQL::Test::Utils::log_path/etcd.log",
		'etcd', '--name', 'etcd1', '--data-dir', "$self->{dir}/etcd",
		'--listen-client-urls', $self->{etcd_url},
		'--advertise-client-urls', $self->{etcd_url},
		'--listen-peer-urls', "http://127.0.0.1:$peer",
		'--initial-advertise-peer-urls', "http://127.0.0.1:$peer",
		'--initial-cluster', "etcd1=http://127.0.0.1:$peer");
	$self->poll(sub { $http->get("$self->{etcd_url}/health")->{success} }, 30)
	  or die 'etcd did not start';

	my $user = getpwuid($>);
	my $mock = $opt{mock};
	for my $name ('db1', 'db2')
	{
		# a Cluster object for its port, socket directory and psql
		my $pg = PostgreSQL::Test::Cluster->new($name);
		my $rest = PostgreSQL::Test::Cluster::get_free_port();
		my $yaml = "$self->{dir}/$name.yml";
		my $pg_address = '127.0.0.1:' . $pg->port;
		write_yaml($yaml, {
			name => $name,
			restapi => { listen => "127.0.0.1:$rest", connect_address => "127.0.0.1:$rest" },
			etcd3 => { hosts => "127.0.0.1:$client" },
			bootstrap => { dcs => {
				ttl => 10, loop_wait => 1, retry_timeout => 3,
				synchronous_mode => $opt{synchronous_mode} ? JSON::PP::true : JSON::PP::false,
				postgresql => { parameters => {
					'smsdispatch.ip2sms_url' => $mock->send_url,
					'smsdispatch.ip2sms_status_url' => $mock->status_url,
					'smsdispatch.ip2sms_login' => 'user',
					'smsdispatch.ip2sms_password_file' => $mock->password_file,
					'smsdispatch.database' => 'postgres',
					'smsdispatch.naptime' => '200ms',
					'smsdispatch.max_per_phone_per_hour' => '0',
					unix_socket_directories => $pg->host,
					logging_collector => 'on',
					log_directory => $PostgreSQL::Test::Utils::log_path,
					log_filename => "pg_$name.log",
					log_line_prefix => '%m [%p] ',
					%{ $opt{parameters} // {} } } } } },
			postgresql => {
				listen => $pg_address,
				connect_address => $pg_address,
				data_dir => $pg->data_dir,
				bin_dir => $pg->config_data('--bindir'),
				pgpass => "$self->{dir}/$name.pgpass",
				authentication => { superuser => { username => $user } },
				pg_hba => [
					'local all all peer',
					'host all all 127.0.0.1/32 scram-sha-256',
					'host replication replicator 127.0.0.1/32 scram-sha-256' ] },
			watchdog => { mode => 'off' } });
		my $node = { name => $name, pg => $pg, yaml => $yaml,
			rest => "http://127.0.0.1:$rest", log => "$PostgreSQL::Test::Utils::log_path/pg_$name.log" };
		push @{ $self->{nodes} }, $node;
		$self->start_patroni($node);
		# the first bootstraps the cluster, the second clones it
		if ($name eq 'db1')
		{
			$self->poll(sub { $self->is_leader($node) }, 90)
			  or die "$name did not become the leader";
			$pg->safe_psql('postgres', 'CREATE EXTENSION smsdispatch');
		}
	}
	$self->wait_healthy(120) or die 'the replica did not join';
	return $self;
}

sub start_patroni
{
	my ($self, $node) = @_;
	$node->{patroni_pid} = spawn("$PostgreSQL::Test::Utils::log_path/patroni_$node->{name}.log",
		'patroni', $node->{yaml});
}

sub nodes { @{ $_[0]{nodes} } }

# Calls $test until it returns true or $timeout seconds pass; returns
# whether it did.
sub poll
{
	my ($self, $test, $timeout) = @_;
	my $end = time() + $timeout;
	while (time() < $end)
	{
		return 1 if $test->();
		usleep(100_000);
	}
	return 0;
}

# Whether the node's Patroni says it is the running leader (its REST API's
# /primary answers 200 only then).
sub is_leader
{
	my ($self, $node) = @_;
	return $self->{http}->get("$node->{rest}/primary")->{status} == 200;
}

# The node that is the leader now, or undef.
sub leader
{
	my ($self) = @_;
	my ($leader) = grep { $self->is_leader($_) } $self->nodes;
	return $leader;
}

# A node that is not $leader (default: the leader now).
sub replica
{
	my ($self, $leader) = @_;
	$leader //= $self->leader;
	my ($replica) = grep { $_ != $leader } $self->nodes;
	return $replica;
}

# Waits until a node other than $old is the leader and accepts writes;
# returns it, or undef after $timeout seconds.
sub wait_new_leader
{
	my ($self, $old, $timeout) = @_;
	my $new;
	$self->poll(sub {
		($new) = grep { $_ != $old && $self->is_leader($_) } $self->nodes;
		return $new && $new->{pg}->safe_psql('postgres', 'SELECT NOT pg_is_in_recovery()') eq 't';
	}, $timeout) or return undef;
	return $new;
}

# Waits until there is a leader, the other node streams from it and, in
# synchronous mode, the DCS names it the synchronous standby (only then may
# Patroni promote it), and the leader's worker runs.
sub wait_healthy
{
	my ($self, $timeout) = @_;
	my $want = $self->{synchronous_mode} ? 'sync_standby' : 'replica';
	return $self->poll(sub {
		my $leader = $self->leader or return 0;
		my $replica = $self->replica($leader);
		my $r = $self->{http}->get("$leader->{rest}/cluster");
		return 0 unless $r->{success};
		my ($member) = grep { $_->{name} eq $replica->{name} }
		  @{ decode_json($r->{content})->{members} };
		return 0 unless $member && $member->{role} eq $want
		  && $member->{state} =~ /^(running|streaming)$/;
		my ($rc, $out) = $leader->{pg}->psql('postgres', q{
			SELECT (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')
				 + (SELECT count(*) FROM pg_stat_activity
					 WHERE backend_type = 'smsdispatch worker')});
		return $rc == 0 && $out eq '2';
	}, $timeout);
}

# patronictl switchover to the replica; returns its exit status and output.
sub switchover
{
	my ($self) = @_;
	my $leader = $self->leader;
	my $candidate = $self->replica($leader);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'patronictl', '-c', $leader->{yaml}, 'switchover',
		'--leader', $leader->{name}, '--candidate', $candidate->{name}, '--force' ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	return ($? >> 8, $out . $err);
}

# The pid of the node's postmaster (from postmaster.pid), or undef.
sub postmaster_pid
{
	my ($self, $node) = @_;
	my $file = $node->{pg}->data_dir . '/postmaster.pid';
	open my $fh, '<', $file or return undef;
	my $pid = <$fh>;
	close $fh;
	chomp $pid;
	return $pid;
}

# kill -9 of the node's postmaster (Patroni stays up).
sub kill_postmaster
{
	my ($self, $node) = @_;
	my $pid = $self->postmaster_pid($node) or die "$node->{name} has no postmaster";
	kill 'KILL', $pid or die "kill -9 $pid: $!";
}

# Freezes (SIGSTOP) and thaws (SIGCONT) the node's Patroni.
sub stop_patroni
{
	my ($self, $node) = @_;
	kill 'STOP', $node->{patroni_pid};
	$node->{frozen} = 1;
}

sub cont_patroni
{
	my ($self, $node) = @_;
	kill 'CONT', $node->{patroni_pid};
	delete $node->{frozen};
}

# Waits for a pid we started to exit, up to $timeout seconds.
sub reap
{
	my ($self, $pid, $timeout) = @_;
	return $self->poll(sub { waitpid($pid, POSIX::WNOHANG()) != 0 }, $timeout);
}

# Stops every process it started, by pid: each Patroni (which stops its
# PostgreSQL), any postmaster left, then etcd.
sub stop
{
	my ($self) = @_;
	for my $node ($self->nodes)
	{
		next unless $node->{patroni_pid};
		$self->cont_patroni($node) if $node->{frozen};
		kill 'TERM', $node->{patroni_pid};
		kill 'KILL', $node->{patroni_pid} unless $self->reap($node->{patroni_pid}, 60);
		delete $node->{patroni_pid};
		my $pm = $self->postmaster_pid($node);
		if ($pm && kill(0, $pm))
		{
			kill 'QUIT', $pm;
			$self->poll(sub { !kill(0, $pm) }, 30);
		}
	}
	if ($self->{etcd_pid})
	{
		kill 'TERM', $self->{etcd_pid};
		kill 'KILL', $self->{etcd_pid} unless $self->reap($self->{etcd_pid}, 30);
		delete $self->{etcd_pid};
	}
}

sub DESTROY
{
	local $?;
	$_[0]->stop;
}

1;

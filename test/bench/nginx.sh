# Sourced by the IP2SMS benchmarks: nginx answering a fixed IP2SMS answer
# (Accepted to a send, Delivered to a status request) on a free 127.0.0.1
# port, faster than the worker can send.
#
#   bench_nginx_start DIR    # sets $BENCH_SEND_URL and $BENCH_STATUS_URL
#   bench_nginx_stop DIR
BENCH_NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# bench_free_port
. "$(dirname "$0")/common.sh"

bench_nginx_start() {
	nginx_dir=$1
	nginx_port=$(bench_free_port)
	mkdir -p "$nginx_dir/nginx-tmp"
	cat > "$nginx_dir/nginx.conf" <<CONF
worker_processes 1;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/nginx-error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $nginx_dir/nginx-tmp/body;
	proxy_temp_path $nginx_dir/nginx-tmp/proxy;
	fastcgi_temp_path $nginx_dir/nginx-tmp/fastcgi;
	uwsgi_temp_path $nginx_dir/nginx-tmp/uwsgi;
	scgi_temp_path $nginx_dir/nginx-tmp/scgi;
	keepalive_requests 10000000;
	server {
		listen 127.0.0.1:$nginx_port;
		location /ip2sms/ {
			default_type "text/xml; charset=utf-8";
			return 200 '<status id="6615134392391" date="Wed, 28 Mar 2007 12:35:00 +0300"><state>Accepted</state></status>';
		}
		location /ip2sms-request/ {
			default_type "text/xml; charset=utf-8";
			return 200 '<status id="6615134392391" date="Wed, 28 Mar 2007 12:36:00 +0300"><state>Delivered</state></status>';
		}
	}
}
CONF
	"$BENCH_NGINX" -p "$nginx_dir" -e "$nginx_dir/nginx-error.log" -c "$nginx_dir/nginx.conf"
	BENCH_SEND_URL="http://127.0.0.1:$nginx_port/ip2sms/"
	BENCH_STATUS_URL="http://127.0.0.1:$nginx_port/ip2sms-request/"
}

bench_nginx_stop() {
	[ -f "$1/nginx.pid" ] && kill "$(cat "$1/nginx.pid")" 2>/dev/null
	return 0
}

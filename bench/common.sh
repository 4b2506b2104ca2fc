# Sourced by the bench scripts: helpers they share. Loopback only.

# A free port on 127.0.0.1 (bound, read, released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until URL answers 2xx; exits the script otherwise.
wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

# nginx_conf DIR PORT [BODY]: an nginx configuration in DIR/nginx.conf on 127.0.0.1:PORT
# (workers as many as cores, no access log, keep-alive without limit) serving a 170-byte
# file at /, or, given BODY (a JSON file), that body at every path as application/json.
# Start it with: nginx -c DIR/nginx.conf -p DIR/nginx
nginx_conf() {
  local dir=$1 port=$2 body=${3:-} location
  mkdir -p "$dir/www" "$dir/nginx"
  # nginx workers run as www-data and must read the body.
  chmod 755 "$dir" "$dir/www"
  if [ -n "$body" ]; then
    cp "$body" "$dir/www/body.json"; chmod 644 "$dir/www/body.json"
    location="root $dir/www; default_type application/json; try_files /body.json =404;"
  else
    head -c 170 /dev/zero | tr '\0' 'x' > "$dir/www/index.html"; chmod 644 "$dir/www/index.html"
    location="root $dir/www;"
  fi
  cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx;
  fastcgi_temp_path $dir/nginx; uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; location / { $location } }
}
CONF
}

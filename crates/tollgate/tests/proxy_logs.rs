//! Proxy access logs for real: Debian's nginx (reverse proxy) and Squid (forward proxy) run on
//! 127.0.0.1 in front of an upstream started by the test; a client counts the bytes it
//! receives; `tollgate import` and `tollgate tail` read the logs the proxies wrote; usage must
//! equal what the client saw, exactly, and reading a log again must add nothing.
//!
//! nginx and Squid must be installed (`cargo xtask ci` installs them); a missing binary fails
//! the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A process started by the test, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: this test needs it (cargo xtask ci installs it with apt-get)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP/1.0 upstream: `GET /size/N` answers N bytes of body. Runs until the test ends.
fn start_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("/");
                let path = target.rsplit_once("/size/").map_or("0", |(_, n)| n);
                let path = path.split('?').next().unwrap_or("0");
                let n: usize = path.parse().unwrap_or(0);
                let body = vec![b'x'; n];
                let mut stream = stream;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    port
}

/// What one client request saw: every byte received, and the body's share.
struct Seen {
    total: u64,
    body: u64,
}

fn fetch(proxy_port: u16, request: &str) -> Seen {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&buf)));
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..head_end])
    );
    Seen {
        total: buf.len() as u64,
        body: (buf.len() - head_end) as u64,
    }
}

fn wait_for_lines(path: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines && text.ends_with('\n') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {lines} lines",
            path.display(),
            text.lines().count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(server: &Server, path: &str, body: &Value) -> Reply {
    server.request(
        "POST",
        path,
        Some(ADMIN_KEY),
        Some("application/json"),
        Some(reqwest::blocking::Body::from(body.to_string())),
    )
}

/// Allocates 127.0.0.0/8 to `cus_local` and defines the meters the checks read.
fn prepare(server: &Server) {
    let r = post(
        server,
        "/v1/ip/allocations",
        &json!({"customer": "cus_local", "cidr": "127.0.0.0/8",
                "valid_from": rfc3339(floor_minute(now_ms()) - DAY_MS)}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for (slug, def) in [
        ("requests", json!({"aggregation": "count"})),
        (
            "bytes-out",
            json!({"aggregation": "sum", "value_path": "$.data.bytes_out"}),
        ),
        (
            "body-bytes",
            json!({"aggregation": "sum", "value_path": "$.data.body_bytes"}),
        ),
    ] {
        assert_eq!(server.put_meter(slug, &def).status, 201);
    }
}

fn total(server: &Server, meter: &str) -> std::collections::BTreeMap<String, i128> {
    let from = q(&rfc3339(floor_minute(now_ms()) - DAY_MS));
    let to = q(&rfc3339(floor_minute(now_ms()) + 10 * MINUTE_MS));
    by_subject(&server.usage_rows(meter, &format!("from={from}&to={to}")))
}

fn one(customer: &str, value: u64) -> std::collections::BTreeMap<String, i128> {
    [(customer.to_owned(), i128::from(value))]
        .into_iter()
        .collect()
}

#[test]
fn nginx_reverse_proxy_log_imports_exactly_what_the_client_saw() {
    let nginx = binary("nginx");
    let dir = TestDir::new("nginx");
    let data = dir.data("data");
    let mut server = Server::start(&data, &[]);
    prepare(&server);
    server.stop();

    let upstream = start_upstream();
    let port = free_port();
    let root = dir.join("nginx");
    for sub in ["", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let log = root.join("access.log");
    let r = root.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
    log_format tollgate '$remote_addr - $remote_user [$time_local] "$request" $status '
                        '$body_bytes_sent "$http_referer" "$http_user_agent" '
                        '$bytes_sent $request_length $request_time "$upstream_addr" "$host"';
    server {{
        listen 127.0.0.1:{port};
        access_log {r}/access.log tollgate;
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"#
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    let _nginx = Proc(
        Command::new(&nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-e")
            .arg(root.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "nginx", &root.join("error.log"));

    let sizes = [0u64, 1, 512, 4096, 100_000, 65_537, 3, 777];
    let mut seen_total = 0;
    let mut seen_body = 0;
    for (i, n) in sizes.iter().enumerate() {
        let seen = fetch(
            port,
            &format!(
                "GET /size/{n}?i={i} HTTP/1.0\r\nHost: shop.example\r\nUser-Agent: it\r\n\r\n"
            ),
        );
        assert_eq!(seen.body, *n);
        seen_total += seen.total;
        seen_body += seen.body;
    }
    wait_for_lines(&log, sizes.len());
    // A line that is not nginx's gets reported with its number, and the rest still counts.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"this is not an access log line\n").unwrap();
    drop(f);

    let log_text = log.to_str().unwrap();
    let data_text = data.to_str().unwrap();
    let out = run(&[
        "import",
        "--quiet",
        "--format",
        "nginx",
        "--data-dir",
        data_text,
        log_text,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("accepted {}", sizes.len())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("line {}:", sizes.len() + 1)),
        "{stdout}"
    );
    // Importing the same log again adds nothing.
    let again = run(&[
        "import",
        "--quiet",
        "--format",
        "nginx",
        "--data-dir",
        data_text,
        log_text,
    ]);
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(
        again_out.contains(&format!("accepted 0, duplicates {}", sizes.len())),
        "{}",
        describe(&again)
    );

    let server = Server::start(&data, &[]);
    assert_eq!(
        total(&server, "requests"),
        one("cus_local", sizes.len() as u64)
    );
    assert_eq!(total(&server, "bytes-out"), one("cus_local", seen_total));
    assert_eq!(total(&server, "body-bytes"), one("cus_local", seen_body));
}

#[test]
fn squid_forward_proxy_log_tailed_to_the_server_counts_exactly_once() {
    let squid = binary("squid");
    let dir = TestDir::new("squid");
    let server = Server::start(&dir.data("data"), &[]);
    prepare(&server);

    let upstream = start_upstream();
    let port = free_port();
    let root = dir.join("squid");
    std::fs::create_dir_all(&root).unwrap();
    // Squid started as root drops to its own user: let it write its files here.
    let log = root.join("access.log");
    for f in ["access.log", "cache.log"] {
        std::fs::write(root.join(f), b"").unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            root.clone(),
            root.join("access.log"),
            root.join("cache.log"),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let r = root.display();
    let conf = format!(
        "http_port 127.0.0.1:{port}
pid_filename {r}/squid.pid
access_log stdio:{r}/access.log squid
cache_log {r}/cache.log
cache_store_log none
buffered_logs off
cache deny all
cache_mem 8 MB
http_access allow all
icp_port 0
htcp_port 0
netdb_filename none
coredump_dir {r}
shutdown_lifetime 0 seconds
logfile_rotate 0
"
    );
    std::fs::write(root.join("squid.conf"), conf).unwrap();
    let _squid = Proc(
        Command::new(&squid)
            .args(["-N", "-f"])
            .arg(root.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Squid logs even a connection that sends no request; wait for its own word, not a probe.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(root.join("cache.log"))
        .unwrap_or_default()
        .contains("Accepting HTTP Socket connections")
    {
        assert!(
            Instant::now() < deadline,
            "squid did not start: {}",
            std::fs::read_to_string(root.join("cache.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let sizes = [10u64, 2048, 70_000, 1, 0, 333];
    let mut seen_total = 0;
    for (i, n) in sizes.iter().enumerate() {
        let url = format!("http://127.0.0.1:{upstream}/size/{n}?i={i}");
        let seen = fetch(
            port,
            &format!("GET {url} HTTP/1.0\r\nHost: 127.0.0.1:{upstream}\r\n\r\n"),
        );
        assert_eq!(seen.body, *n);
        seen_total += seen.total;
    }
    wait_for_lines(&log, sizes.len());

    let tail = |expect: &str| {
        let out = tollgate()
            .args([
                "tail",
                "--once",
                "--format",
                "squid",
                "--server",
                server.base(),
            ])
            .args(["--key", ADMIN_KEY, "--data-dir"])
            .arg(dir.join("tail-state"))
            .arg(&log)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(stdout.contains(expect), "{}", describe(&out));
        stdout
    };
    tail(&format!("accepted {}", sizes.len()));
    // The position is kept: a second run has nothing to send.
    let second = tail("");
    assert!(!second.contains("sent"), "{second}");

    assert_eq!(
        total(&server, "requests"),
        one("cus_local", sizes.len() as u64)
    );
    assert_eq!(total(&server, "bytes-out"), one("cus_local", seen_total));
}

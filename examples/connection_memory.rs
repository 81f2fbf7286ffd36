//! Memory per connection of `examples/electrum_server`: the server's RSS
//! growth over N idle connections, each subscribed to headers and to 5
//! distinct scripthashes, divided by N.
//!
//! ```text
//! scripts/connection_memory.sh                      # release build, then 2,000 and 20,000
//! target/release/examples/connection_memory [--server PATH] [--connections N,N,…] [--in-flight N]
//! ```
//!
//! For each N a fresh server process is started (`--max-sessions` above N,
//! logging off), its RSS is read once it has published its chain
//! (`VmRSS` in `/proc/PID/status`), then client processes (this program
//! with `--client`, at most [`PER_CLIENT`] connections each, so that no
//! process needs more file descriptors than a default hard limit allows)
//! open the connections, at most `--in-flight` (256) per client process
//! being set up at once (a storm of more mostly measures the allocator's
//! fragmentation, and overflows the listen backlog): each sends `server.version`,
//! `blockchain.headers.subscribe` and 5 `blockchain.scripthash.subscribe`
//! and waits for the 7 replies. Once every connection is answered and
//! idle, the server's RSS is read again (the highest of a few reads over
//! a second, so a late allocation is not missed). Reported: the RSS
//! before, after, and the growth per connection.
//!
//! Each process holds one file descriptor per connection; the server needs
//! N plus a few. The shell script raises `ulimit -n` as far as the hard
//! limit allows; an N that does not fit is lowered to what does, and the
//! report says so.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Most connections one client process opens.
const PER_CLIENT: usize = 8_000;
/// Connections one client process sets up at once, by default.
const IN_FLIGHT: usize = 256;
/// Subscriptions to distinct scripts per connection.
const SCRIPTS: usize = 5;
/// File descriptors the server needs besides its connections (stdio,
/// listeners, the runtime's).
const SERVER_FDS: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--client") {
        return client(&args[1..]);
    }
    let mut server = std::env::current_exe()
        .ok()
        .map(|me| me.with_file_name("electrum_server"))
        .unwrap_or_default();
    let mut counts = vec![2_000, 20_000];
    let mut in_flight = IN_FLIGHT;
    let mut at = 0;
    while at < args.len() {
        match (args[at].as_str(), args.get(at + 1)) {
            ("--server", Some(path)) => server = path.into(),
            ("--in-flight", Some(n)) => match n.parse() {
                Ok(n) if n > 0 => in_flight = n,
                _ => {
                    eprintln!("--in-flight takes a positive number");
                    return ExitCode::from(2);
                }
            },
            ("--connections", Some(list)) => {
                counts = match list.split(',').map(|n| n.trim().parse()).collect() {
                    Ok(counts) => counts,
                    Err(_) => {
                        eprintln!("--connections takes comma-separated numbers, e.g. 2000,20000");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => {
                eprintln!("usage: connection_memory [--server PATH] [--connections N,N,…] [--in-flight N]");
                return ExitCode::from(2);
            }
        }
        at += 2;
    }
    let limit = fd_limit();
    println!("file descriptor limit: {limit}; connections set up at once per client process: {in_flight}");
    println!(
        "{:>12} {:>12} {:>12} {:>16}",
        "connections", "RSS before", "RSS after", "per connection"
    );
    for wanted in counts {
        let count = wanted.min(limit.saturating_sub(SERVER_FDS));
        match measure(&server, count, in_flight) {
            Ok((before, after)) => {
                let per = (after.saturating_sub(before)) as f64 / count as f64;
                let note = if count < wanted {
                    format!("  (asked {wanted}; the fd limit {limit} allows {count})")
                } else {
                    String::new()
                };
                println!(
                    "{count:>12} {:>9} KiB {:>9} KiB {:>12.1} KiB{note}",
                    before / 1024,
                    after / 1024,
                    per / 1024.0
                );
            }
            Err(error) => {
                eprintln!("{count} connections: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The soft limit on open files (`RLIMIT_NOFILE`), from `/proc/self/limits`.
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// A process's resident set size in bytes.
fn rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kib * 1024)
}

/// The server's RSS before and after `count` connections.
fn measure(server: &std::path::Path, count: usize, in_flight: usize) -> Result<(u64, u64), String> {
    let mut child = Command::new(server)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--blocks",
            "101",
        ])
        .args([
            "--max-sessions",
            &(count + 1000).to_string(),
            "--max-subs-per-session",
            "none",
        ])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (run scripts/connection_memory.sh)",
                server.display()
            )
        })?;
    let result = run(&mut child, count, in_flight);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn run(child: &mut Child, count: usize, in_flight: usize) -> Result<(u64, u64), String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut addr = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        // `listening on tcp://ADDR` (servers before 0.2 printed no scheme).
        let listen = line
            .strip_prefix("listening on ")
            .map(|rest| rest.trim_start_matches("tcp://"));
        if let Some(listen) = listen {
            addr = listen.trim().parse::<SocketAddr>().ok();
            break;
        }
    }
    let addr = addr.ok_or("the server printed no TCP address")?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(child.id())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    let mut left = count;
    let mut index = 0;
    while left > 0 {
        let n = left.min(PER_CLIENT);
        let client = Command::new(&me)
            .args(["--client", &addr.to_string(), &n.to_string(), &index.to_string()])
            .arg(in_flight.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        clients.push(client);
        left -= n;
        index += 1;
    }
    let started = Instant::now();
    for client in &mut clients {
        let stdout = client.stdout.take().ok_or("no client stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("a client failed: {line:?}"));
        }
    }
    eprintln!("  {count} connections answered in {:.1?}", started.elapsed());
    let mut after = 0;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(250));
        after = after.max(rss(child.id())?);
    }
    for mut client in clients {
        drop(client.stdin.take());
        let _ = client.wait();
    }
    Ok((before, after))
}

/// `--client ADDR N INDEX IN_FLIGHT`: opens N connections (at most
/// IN_FLIGHT being set up at once), subscribes each, prints `ready` once all
/// are answered, and holds them until stdin closes.
fn client(args: &[String]) -> ExitCode {
    let (Some(addr), Some(count), Some(index), Some(in_flight)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: connection_memory --client ADDR N INDEX IN_FLIGHT");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        // At most IN_FLIGHT connections being set up at once: more would
        // overflow the server's listen backlog and wait out SYN retries.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
        for n in 0..count {
            let seed = index * PER_CLIENT + n;
            let slot = slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            tasks.spawn(async move {
                let stream = connect(addr, seed).await;
                drop(slot);
                stream
            });
        }
        let mut streams = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            streams.push(joined.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(streams)
    });
    let streams = match result {
        Ok(streams) => streams,
        Err(error) => {
            println!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    // Hold the connections until the parent closes stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(streams);
    ExitCode::SUCCESS
}

/// One connection: version, headers and [`SCRIPTS`] scripthash
/// subscriptions (scripts distinct across connections), all answered.
async fn connect(addr: SocketAddr, seed: usize) -> Result<tokio::net::TcpStream, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut requests = String::from(
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"server.version\",\"params\":[\"memory\",\"1.4\"]}\n\
         {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"blockchain.headers.subscribe\",\"params\":[]}\n",
    );
    for script in 0..SCRIPTS {
        let hash = format!("{:016x}{:048x}", seed, script + 1);
        requests.push_str(&format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"blockchain.scripthash.subscribe\",\"params\":[\"{hash}\"]}}\n",
            script + 2
        ));
    }
    stream
        .write_all(requests.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = tokio::io::BufReader::new(&mut stream);
    let mut replies = 0;
    let mut line = String::new();
    while replies < SCRIPTS + 2 {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(_) if line.contains("\"error\"") => return Err(format!("refused: {}", line.trim())),
            Ok(_) if line.contains("\"id\"") => replies += 1,
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(stream)
}

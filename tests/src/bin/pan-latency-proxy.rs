//! A TCP proxy on loopback that adds a fixed round-trip delay, for measuring
//! panfs against a server far away (this machine's kernel has no netem).
//!
//!     pan-latency-proxy LISTEN_PORT TARGET_PORT RTT_MS
//!
//! Bytes are forwarded as they arrive, each held for half the round trip in
//! its direction, so the delay adds to every round trip without limiting
//! throughput or reordering anything.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Copies one direction, each piece delivered `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    while let Some((due, piece)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

async fn serve(client: TcpStream, target: u16, delay: Duration) -> anyhow::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", target)).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delayed_copy(client_read, server_write, delay),
        delayed_copy(server_read, client_write, delay),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, rtt_ms] = args.as_slice() else {
        anyhow::bail!("usage: pan-latency-proxy LISTEN_PORT TARGET_PORT RTT_MS");
    };
    let listen: u16 = listen.parse().context("LISTEN_PORT")?;
    let target: u16 = target.parse().context("TARGET_PORT")?;
    let rtt: f64 = rtt_ms.parse().context("RTT_MS")?;
    let delay = Duration::from_secs_f64(rtt / 2000.0);
    let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(client, target, delay).await {
                eprintln!("pan-latency-proxy: {e}");
            }
        });
    }
}

//! A TCP echo service on localhost that shuts down gracefully.
//!
//! What it shows: `weft-shutdown`'s coordinator with ordered phases, a tower
//! service behind a `ShutdownLayer` (requests during shutdown get a
//! "shutting down" answer, requests in flight finish), tracked tasks (the
//! accept loop and one task per connection), and the report at the end.
//!
//! Run it:
//!
//! ```text
//! cargo run --example graceful_shutdown                 # Ctrl-C to stop (twice to force)
//! cargo run --example graceful_shutdown -- --stop-after 3
//! ```
//!
//! It listens on 127.0.0.1 (a free port, printed) and starts a few demo
//! clients that send a line every 100 ms; each line takes the service
//! 250 ms to answer (it is "work"). Talk to it yourself with
//! `nc 127.0.0.1 PORT`. What to look for: after the trigger, the acceptor
//! stops, answers already being worked on still arrive, new lines get
//! `503 shutting down`, connections close, and the report shows every
//! request accounted for (accepted = completed + failed + cancelled).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt, service_fn};
use weft_shutdown::{Coordinator, ShuttingDown};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft_examples::init_tracing();
    let stop_after = parse_stop_after()?;

    let shutdown = Coordinator::builder()
        .phase("stop-accepting", Duration::from_secs(1))
        .phase("drain", Duration::from_secs(5))
        .phase("close", Duration::from_secs(1))
        .task_grace(Duration::from_secs(1))
        .build()?;

    // The "work": uppercase a line, slowly. Behind the ShutdownLayer, which
    // refuses new requests once shutdown begins; the `drain` phase waits for
    // the requests in flight.
    let layer = shutdown.layer("drain", "echo service")?;
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|line: String| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok::<_, Infallible>(line.to_uppercase())
        }));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("echo service listening on {addr} (Ctrl-C to stop, twice to force)");

    let stop = shutdown.requested();
    let conns = shutdown.clone();
    shutdown.spawn("acceptor", move |_cancel| async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    println!("acceptor: stopped accepting");
                    return;
                }
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let svc = service.clone();
                    let _ = conns.spawn(format!("connection {peer}"), move |cancel| {
                        serve(stream, svc, cancel)
                    });
                }
            }
        }
    })?;

    // The `close` phase: last words.
    shutdown.register_fn("close", "farewell", |_deadline| async {
        println!("close phase: goodbye");
    })?;

    // Demo clients, so there is traffic to drain.
    let demo = tokio_util::sync::CancellationToken::new();
    for id in 0..3 {
        tokio::spawn(demo_client(addr, id, demo.clone()));
    }

    if let Some(secs) = stop_after {
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            println!("--stop-after {secs}: triggering shutdown");
            trigger.trigger();
        });
    }

    let report = shutdown.run().await;
    demo.cancel();
    println!("\n{report}");
    let stats = layer.stats();
    println!(
        "echo service: accepted {}, completed {}, failed {}, cancelled {}, refused during shutdown {}",
        stats.accepted, stats.completed, stats.failed, stats.cancelled, stats.rejected
    );
    if stats.accepted != stats.completed + stats.failed + stats.cancelled {
        eprintln!("counts do not add up");
        std::process::exit(1);
    }
    if !report.is_clean() {
        std::process::exit(2);
    }
    Ok(())
}

/// One connection: read lines, answer each through the service, until the
/// client leaves or the connection is asked to close.
async fn serve<S>(stream: TcpStream, mut svc: S, cancel: tokio_util::sync::CancellationToken)
where
    S: Service<String, Response = String, Error = weft_core::BoxError>,
{
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => break,
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                _ => break,
            },
        };
        let answer = match svc.ready().await {
            Ok(svc) => match svc.call(line).await {
                Ok(up) => up,
                Err(e) => format!("500 {e}"),
            },
            Err(e) if e.downcast_ref::<ShuttingDown>().is_some() => "503 shutting down".to_owned(),
            Err(e) => format!("500 {e}"),
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn demo_client(addr: SocketAddr, id: u32, stop: tokio_util::sync::CancellationToken) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return;
    };
    let (read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(read).lines();
        let (mut ok, mut refused) = (0, 0);
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("503") {
                refused += 1;
            } else {
                ok += 1;
            }
        }
        println!("client {id}: {ok} answers, {refused} refused, connection closed by server");
    });
    let mut n = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        n += 1;
        if write
            .write_all(format!("client {id} line {n}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = reader.await;
}

fn parse_stop_after() -> Result<Option<u64>, String> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => Ok(None),
        Some("--stop-after") => args
            .next()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| "--stop-after needs a number of seconds".to_owned()),
        Some(other) => Err(format!(
            "unknown argument {other}; usage: graceful_shutdown [--stop-after SECS]"
        )),
    }
}

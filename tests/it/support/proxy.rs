//! A TCP proxy that a test can cut and restore, to make a real server unreachable from
//! jetpost (the database going away) without stopping the server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections from its own loopback port to `target`; stopped when dropped.
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections being forwarded now.
    live: Arc<AtomicUsize>,
    /// Cancelled to cut the connections of the current generation.
    generation: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            live: Arc::default(),
            generation: Arc::default(),
            stop: CancellationToken::new(),
        };
        let (up, live, generation, stop) = (
            proxy.up.clone(),
            proxy.live.clone(),
            proxy.generation.clone(),
            proxy.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if !up.load(Ordering::SeqCst) {
                    // Refused: the connection is closed at once.
                    continue;
                }
                let cut = generation.lock().unwrap().clone();
                let live = live.clone();
                tokio::spawn(async move {
                    live.fetch_add(1, Ordering::SeqCst);
                    let _counted = Counted(live);
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        proxy
    }

    /// How many connections are being forwarded now (a client's connection counts until
    /// either side closes it).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut generation = self.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Counts one forwarded connection down when its task ends, however it ends.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().unwrap().cancel();
    }
}

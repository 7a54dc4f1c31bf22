//! [`Switch`]: a TCP forwarder in front of the stack's gateway that a test
//! turns off (connections are dropped: PostgREST unreachable) or mutes
//! (requests reach PostgREST and commit, the answers are thrown away), with
//! the real PostgREST and `ingest_signal` on the other side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the forwarder does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwards both ways.
    Up,
    /// Closes every connection at once: PostgREST unreachable.
    Down,
    /// Forwards requests, discards answers: the call commits, the edge never
    /// hears back.
    Mute,
}

/// A TCP forwarder to the stack's gateway that the test switches.
pub(crate) struct Switch {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Switch {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::Up));
        let open: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_mode, accept_open) = (Arc::clone(&mode), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *accept_mode.lock().expect("mode");
                if mode == Mode::Down {
                    continue; // dropped: closed
                }
                let forward = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    if mode == Mode::Up {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    } else {
                        let (mut client_read, _client_write) = client.split();
                        let (mut server_read, mut server_write) = server.split();
                        let mut discard = tokio::io::sink();
                        let _ = tokio::join!(
                            tokio::io::copy(&mut client_read, &mut server_write),
                            tokio::io::copy(&mut server_read, &mut discard),
                        );
                    }
                });
                accept_open.lock().expect("open").push(forward);
            }
        });
        Self { addr, mode, open }
    }

    /// Switches, cutting the connections opened in the old mode.
    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
        for forward in self.open.lock().expect("open").drain(..) {
            forward.abort();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

//! The `DevTools` client's failure modes, against a websocket server the
//! test controls: a socket that dies fails every pending call at once (so
//! a killed Chromium fails its captures promptly), and a call that gets no
//! answer fails at its deadline without spoiling the connection.

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use capture::cdp::{CdpError, Connection};
use serde_json::{Value, json};
use tungstenite::Message;

/// A one-connection websocket server; `answer` sees each command and
/// returns the replies to send (none: stay silent), or `None` to drop the
/// connection.
fn server(
    mut answer: impl FnMut(&Value) -> Option<Vec<Value>> + Send + 'static,
) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}/devtools/browser/test",
        listener.local_addr().unwrap()
    );
    let (seen, methods) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut socket = tungstenite::accept(stream).unwrap();
        loop {
            let Ok(Message::Text(text)) = socket.read() else {
                return;
            };
            let command: Value = serde_json::from_str(text.as_str()).unwrap();
            let _ = seen.send(command["method"].as_str().unwrap_or("").to_owned());
            match answer(&command) {
                Some(replies) => {
                    for reply in replies {
                        socket.send(Message::text(reply.to_string())).unwrap();
                    }
                }
                // Dropping the socket closes the TCP connection, no close frame.
                None => return,
            }
        }
    });
    (url, methods)
}

#[test]
fn replies_reach_their_callers_in_any_order_and_errors_say_why() {
    let mut held: Option<Value> = None;
    let (url, _) = server(move |command| {
        let id = command["id"].clone();
        Some(match command["method"].as_str() {
            // Answered only after the next command, to cross the replies.
            Some("First") => {
                held = Some(json!({ "id": id, "result": { "n": 1 } }));
                vec![json!({ "method": "Some.event", "params": {} })]
            }
            Some("Second") => vec![
                json!({ "id": id, "result": { "n": 2 }, "sessionId": "s" }),
                held.take().unwrap(),
            ],
            _ => vec![json!({ "id": id, "error": { "code": -32000, "message": "No such thing" } })],
        })
    });
    let connection = Connection::connect(&url).unwrap();
    let first = connection.send(None, "First", json!({})).unwrap();
    let second = connection.send(Some("s"), "Second", json!({})).unwrap();
    let limit = Duration::from_secs(5);
    assert_eq!(second.wait(limit).unwrap(), json!({ "n": 2 }));
    assert_eq!(first.wait(limit).unwrap(), json!({ "n": 1 }));
    assert_eq!(
        connection.call(None, "Third", json!({}), limit),
        Err(CdpError::Protocol {
            method: "Third".into(),
            message: "No such thing".into()
        })
    );
}

#[test]
fn a_socket_that_dies_fails_every_pending_call_at_once() {
    // Silent for the first two commands, then the connection drops.
    let mut count = 0;
    let (url, methods) = server(move |_| {
        count += 1;
        (count < 3).then(Vec::new)
    });
    let connection = Connection::connect(&url).unwrap();
    let limit = Duration::from_secs(30);
    let waiting: Vec<_> = ["Slow.one", "Slow.two"]
        .into_iter()
        .map(|method| {
            let call = connection.send(None, method, json!({})).unwrap();
            std::thread::spawn(move || {
                let started = Instant::now();
                (call.wait(limit), started.elapsed())
            })
        })
        .collect();
    for expected in ["Slow.one", "Slow.two"] {
        assert_eq!(methods.recv().unwrap(), expected);
    }
    let started = Instant::now();
    let killer = connection.call(None, "Kill.socket", json!({}), limit);
    assert!(matches!(killer, Err(CdpError::Closed(_))), "{killer:?}");
    for waiter in waiting {
        let (result, _) = waiter.join().unwrap();
        assert!(matches!(result, Err(CdpError::Closed(_))), "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed at once, not at the {limit:?} deadline: {:?}",
        started.elapsed()
    );
    assert!(connection.is_closed());
    // Later calls fail without waiting.
    let started = Instant::now();
    let later = connection.call(None, "After", json!({}), limit);
    assert!(matches!(later, Err(CdpError::Closed(_))), "{later:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[test]
fn a_call_without_answer_times_out_and_the_connection_stays_usable() {
    let (url, _) = server(|command| {
        let id = command["id"].clone();
        Some(match command["method"].as_str() {
            Some("Never") => Vec::new(),
            // Answers the one that timed out too late, then this one.
            _ => vec![
                json!({ "id": 1, "result": { "late": true } }),
                json!({ "id": id, "result": { "ok": true } }),
            ],
        })
    });
    let connection = Connection::connect(&url).unwrap();
    let started = Instant::now();
    let result = connection.call(None, "Never", json!({}), Duration::from_millis(300));
    let took = started.elapsed();
    assert_eq!(
        result,
        Err(CdpError::Timeout {
            method: "Never".into(),
            after: Duration::from_millis(300)
        })
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        connection
            .call(None, "Next", json!({}), Duration::from_secs(5))
            .unwrap(),
        json!({ "ok": true }),
        "the late reply to the timed-out call went nowhere"
    );
    assert!(!connection.is_closed());
}

#[test]
fn nothing_listening_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = Connection::connect(&format!("ws://127.0.0.1:{port}/devtools/browser/x"));
    assert!(matches!(result, Err(CdpError::Connect(_))), "{result:?}");
}

//! The `DevTools` client's failure modes, against a fake Chromium on the
//! two pipes the test controls: a pipe that closes fails every pending call
//! at once (so a killed Chromium fails its captures promptly), a call that
//! gets no answer fails at its deadline without spoiling the connection,
//! and messages are framed by NUL bytes, however the pipe splits them.

use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use capture::cdp::{CdpError, Connection};
use serde_json::{Value, json};

/// A fake Chromium: `answer` sees each command and returns the replies to
/// send (none: stay silent), or `None` to close both pipes. Returns the
/// connection to it and the methods it was sent, in order.
fn server(
    mut answer: impl FnMut(&Value) -> Option<Vec<Value>> + Send + 'static,
) -> (Connection, mpsc::Receiver<String>) {
    let (from_daemon, to_chromium) = std::io::pipe().unwrap();
    let (from_chromium, mut to_daemon) = std::io::pipe().unwrap();
    let (seen, methods) = mpsc::channel();
    std::thread::spawn(move || {
        let mut commands = BufReader::new(from_daemon);
        loop {
            let mut message = Vec::new();
            if commands.read_until(0, &mut message).unwrap_or(0) == 0 {
                return;
            }
            assert_eq!(message.pop(), Some(0), "every command ends with a NUL byte");
            let command: Value = serde_json::from_slice(&message).unwrap();
            let _ = seen.send(command["method"].as_str().unwrap_or("").to_owned());
            match answer(&command) {
                Some(replies) => {
                    for reply in replies {
                        let mut bytes = reply.to_string().into_bytes();
                        bytes.push(0);
                        // Split in two writes: the reader must put them together.
                        let (head, tail) = bytes.split_at(bytes.len() / 2);
                        to_daemon.write_all(head).unwrap();
                        to_daemon.flush().unwrap();
                        to_daemon.write_all(tail).unwrap();
                    }
                }
                // Dropping both ends: what a dying Chromium does.
                None => return,
            }
        }
    });
    (
        Connection::new(from_chromium, to_chromium).unwrap(),
        methods,
    )
}

#[test]
fn replies_reach_their_callers_in_any_order_and_errors_say_why() {
    let mut held: Option<Value> = None;
    let (connection, _) = server(move |command| {
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
fn a_pipe_that_closes_fails_every_pending_call_at_once() {
    // Silent for the first two commands, then the connection drops.
    let mut count = 0;
    let (connection, methods) = server(move |_| {
        count += 1;
        (count < 3).then(Vec::new)
    });
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
    let killer = connection.call(None, "Kill.pipe", json!({}), limit);
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
    let (connection, _) = server(|command| {
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
fn a_chromium_that_never_reads_does_not_block_the_caller() {
    // Nobody reads the daemon's commands: the pipe fills up (64 KiB), and
    // sending must still return at once, each call failing at its deadline.
    let (_from_daemon, to_chromium) = std::io::pipe().unwrap();
    let (from_chromium, _to_daemon) = std::io::pipe().unwrap();
    let connection = Connection::new(from_chromium, to_chromium).unwrap();
    let big = "x".repeat(100_000);
    let started = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            connection
                .send(None, "Big", json!({ "data": big }))
                .unwrap()
        })
        .collect();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "sending did not wait for the pipe: {:?}",
        started.elapsed()
    );
    for call in calls {
        assert!(matches!(
            call.wait(Duration::from_millis(100)),
            Err(CdpError::Timeout { .. })
        ));
    }
}

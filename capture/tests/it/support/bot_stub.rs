//! A stand-in for the Bot API's long polling (Telegram cannot run here):
//! `getUpdates` answers the queued updates from the requested offset on,
//! as Telegram does, or holds the request briefly and answers none (a long
//! poll that timed out); `sendMessage` and `sendPhoto` answer a sent message.
//! Every request is recorded (method, path with the bot token, content type,
//! body), so tests check the exact requests, and the most `getUpdates` ever
//! in flight at once is counted (Telegram refuses a second one with 409).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::telegram_stub::Recorded;

/// How long an empty `getUpdates` is held before answering `[]`.
const EMPTY_POLL: Duration = Duration::from_millis(150);

#[derive(Clone, Default)]
pub(crate) struct BotStub {
    updates: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Answer every queued update whatever the offset: a Bot API that
    /// re-sends updates the bot already saw (as Telegram does until an
    /// offset confirms them, e.g. after a crash).
    redeliver: bool,
    polls_in_flight: Arc<AtomicUsize>,
    most_polls_in_flight: Arc<AtomicUsize>,
}

impl BotStub {
    /// Starts the stub; returns it and its base URL.
    pub(crate) async fn start(redeliver: bool) -> (Self, String) {
        let stub = Self {
            redeliver,
            ..Self::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let served = stub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let stub = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let stub = stub.clone();
                        async move { Ok::<_, Infallible>(stub.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (stub, base)
    }

    /// Queues a private-chat message from `chat` as update `update_id`.
    pub(crate) fn message(&self, update_id: i64, chat: i64, chat_type: &str, text: &str) {
        self.updates.lock().expect("lock").push(json!({
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "from": { "id": chat, "is_bot": false, "first_name": "Trader", "language_code": "en" },
                "chat": { "id": chat, "first_name": "Trader", "type": chat_type },
                "date": 1_700_000_000,
                "text": text,
                "entities": [{ "offset": 0, "length": text.split(' ').next().unwrap_or("").len(), "type": "bot_command" }],
            },
        }));
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let path = parts.uri.path().to_owned();
        self.requests.lock().expect("lock").push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: body.clone(),
        });
        let result = if path.ends_with("/getUpdates") {
            let in_flight = self.polls_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_polls_in_flight
                .fetch_max(in_flight, Ordering::SeqCst);
            let offset = serde_json::from_slice::<Value>(&body).expect("a JSON body")["offset"]
                .as_i64()
                .unwrap_or(0);
            let due: Vec<Value> = self
                .updates
                .lock()
                .expect("lock")
                .iter()
                .filter(|u| self.redeliver || u["update_id"].as_i64() >= Some(offset))
                .cloned()
                .collect();
            // Redelivered updates arrive at the pace of a long poll, not in a busy loop.
            if due.is_empty() || self.redeliver {
                tokio::time::sleep(EMPTY_POLL).await;
            }
            self.polls_in_flight.fetch_sub(1, Ordering::SeqCst);
            Value::Array(due)
        } else {
            json!({
                "message_id": 9000,
                "from": { "id": 42, "is_bot": true, "first_name": "Signal bot", "username": "signal_capture_bot" },
                "chat": { "id": 111, "type": "private" },
                "date": 1_700_000_001,
                "text": "sent",
            })
        };
        let mut response = Response::new(Full::new(Bytes::from(
            json!({ "ok": true, "result": result }).to_string(),
        )));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        response
    }

    /// Every request so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// The requests to one method, in order.
    pub(crate) fn calls(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(&format!("/{method}")))
            .collect()
    }

    /// The JSON bodies of the requests to one method.
    pub(crate) fn bodies(&self, method: &str) -> Vec<Value> {
        self.calls(method)
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
            .collect()
    }

    /// The most `getUpdates` requests that were ever in flight at once.
    pub(crate) fn most_polls_in_flight(&self) -> usize {
        self.most_polls_in_flight.load(Ordering::SeqCst)
    }
}

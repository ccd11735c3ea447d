//! Test helpers: a one-route HTTP server on port 0 that records what it receives and answers
//! with a canned response, a server that never answers, and a port nobody listens on.

use steps::model::{
    Attempt, Category, EmailAddress, NotificationId, PhoneNumber, Recipient, RecipientId, TenantId,
};
use steps::render::Content;
use workflows::ports::Outbound;

/// The local servers (feature `http`: only the real clients call them).
#[cfg(feature = "http")]
mod servers {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// One request as the server saw it.
    #[derive(Debug)]
    pub(crate) struct Captured {
        /// The method.
        pub method: Method,
        /// The path and query.
        pub uri: Uri,
        /// The headers.
        pub headers: HeaderMap,
        /// The raw body.
        pub body: Bytes,
    }

    impl Captured {
        /// A header as text, or "" when absent.
        pub fn header(&self, name: &str) -> &str {
            self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
        }
    }

    /// A canned answer.
    #[derive(Debug, Clone)]
    pub(crate) struct Canned {
        /// The status.
        pub status: u16,
        /// Extra headers.
        pub headers: Vec<(&'static str, String)>,
        /// The body.
        pub body: String,
    }

    impl Canned {
        /// An answer with a JSON body.
        pub fn json(status: u16, body: &str) -> Self {
            Self {
                status,
                headers: vec![("content-type", "application/json".into())],
                body: body.to_owned(),
            }
        }

        /// Adds a header.
        pub fn with(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((name, value.to_owned()));
            self
        }
    }

    /// Starts a server answering every request with `canned`; returns its base URL and the stream
    /// of captured requests.
    pub(crate) async fn capture_server(
        canned: Canned,
    ) -> (String, mpsc::UnboundedReceiver<Captured>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let canned = canned.clone();
                async move {
                    let _ = tx.send(Captured { method, uri, headers, body });
                    let mut response =
                        (StatusCode::from_u16(canned.status).expect("valid status"), canned.body)
                            .into_response();
                    for (name, value) in canned.headers {
                        response.headers_mut().insert(name, value.parse().expect("valid header"));
                    }
                    response
                }
            },
        );
        (serve(app).await, rx)
    }

    /// Starts a server that takes every request and never answers.
    pub(crate) async fn hanging_server() -> String {
        let app = Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::OK
        });
        serve(app).await
    }

    /// A server that reads the start of every request, then drops the connection without an
    /// answer: a reset after the request was (at least partly) written.
    pub(crate) async fn resetting_server() -> String {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0_u8; 64];
                let _ = socket.read(&mut buffer).await;
                drop(socket);
            }
        });
        format!("http://{addr}")
    }

    /// A base URL on which nothing listens: connecting is refused.
    pub(crate) async fn refused_base_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }

    async fn serve(app: Router) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

#[cfg(feature = "http")]
pub(crate) use servers::{
    Canned, Captured, capture_server, hanging_server, refused_base_url, resetting_server,
};

/// The recipient's email in the fixtures.
pub(crate) const TO_EMAIL: &str = "jane.doe@example.org";
/// The recipient's phone in the fixtures.
pub(crate) const TO_PHONE: &str = "+14155550123";

/// A message to the fixture recipient with `content`.
pub(crate) fn message(content: Content) -> Outbound {
    Outbound {
        tenant: TenantId::new("acme").expect("id"),
        notification_id: NotificationId::new("n_01HZX3V4").expect("id"),
        attempt: Attempt(2),
        idempotency_key: "n_01HZX3V4:email:2".into(),
        recipient: Recipient {
            id: RecipientId::new("user-1").expect("id"),
            email: Some(EmailAddress::parse(TO_EMAIL).expect("email")),
            phone: Some(PhoneNumber::parse(TO_PHONE).expect("phone")),
            opt_out: vec![],
        },
        category: Category::new("order_updates").expect("id"),
        content,
        devices: vec![],
    }
}

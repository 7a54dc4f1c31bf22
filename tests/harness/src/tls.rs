//! [`WrongNameProxy`]: a stand-in for the stack's Postgres that presents a certificate issued
//! for another name, so tests can prove that `verify-full` refuses it.
//!
//! It answers Postgres's `SSLRequest` with `S` and completes the TLS handshake with a
//! certificate for `wrong.example` from a CA of its own (written to [`WrongNameProxy::ca_file`]),
//! then relays the session to the stack's real Postgres over TLS verified against the stack's
//! CA. So a client that trusts the proxy's CA but does not check the name (`verify-ca`, or
//! `require`) reaches the real database through it, and one that checks the name
//! (`verify-full`) must stop at the handshake: [`WrongNameProxy::handshakes`] counts the
//! handshakes that completed, and nothing reaches Postgres without one.
//!
//! A relay is exactly what SCRAM channel binding detects (the client binds to the proxy's
//! certificate, the server to its own), so a login through it succeeds only with
//! `channel_binding=disable`; tests use that too, to show the binding is on by default.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Stack;

/// Postgres's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The name the proxy's certificate is issued for (and nothing else: no IP address).
pub const WRONG_NAME: &str = "wrong.example";

/// See the module doc. Stops relaying when dropped.
#[derive(Debug)]
pub struct WrongNameProxy {
    pub addr: SocketAddr,
    ca: tempfile::NamedTempFile,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WrongNameProxy {
    /// Listens on `127.0.0.1:0` and relays to the stack's Postgres.
    pub async fn start(stack: &Stack) -> Self {
        let (ca_pem, server) = wrong_name_certificates();
        let mut ca = tempfile::Builder::new()
            .suffix(".crt")
            .tempfile()
            .expect("a temporary file for the proxy's CA");
        std::io::Write::write_all(&mut ca, ca_pem.as_bytes()).expect("write the proxy's CA");
        let upstream = upstream(stack);
        let upstream_tls = postgres_tls::verify::client_config(
            postgres_tls::verify::Verification::Full,
            Some(
                &postgres_tls::verify::roots(&postgres_tls::RootSource::File(
                    stack.ca_cert.clone().into(),
                ))
                .expect("the stack's CA"),
            ),
        )
        .expect("TLS settings for the stack");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let counter = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, counter, upstream_tls) = (
                    acceptor.clone(),
                    Arc::clone(&counter),
                    Arc::clone(&upstream_tls),
                );
                tokio::spawn(async move {
                    // A refused handshake or a closed session ends the relay; either is fine.
                    let _ = relay(client, acceptor, counter, upstream, upstream_tls).await;
                });
            }
        });
        Self {
            addr,
            ca,
            handshakes,
            task,
        }
    }

    /// The PEM file of the CA that issued the proxy's certificate.
    pub fn ca_file(&self) -> &Path {
        self.ca.path()
    }

    /// TLS handshakes a client completed with the proxy.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// `stack_url` (one of the stack's URLs) aimed at the proxy, trusting the proxy's CA, with
    /// `sslmode` and any `extra` parameters (`channel_binding=disable`).
    pub fn url(&self, stack_url: &str, sslmode: &str, extra: &str) -> String {
        let base = stack_url
            .split_once('?')
            .map_or(stack_url, |(base, _)| base);
        let (userinfo, rest) = base.rsplit_once('@').expect("a URL with credentials");
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        let mut url = format!(
            "{userinfo}@{}{path}?sslmode={sslmode}&sslrootcert={}",
            self.addr,
            self.ca_file().display()
        );
        if !extra.is_empty() {
            url.push('&');
            url.push_str(extra);
        }
        url
    }
}

impl Drop for WrongNameProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the stack's Postgres listens: the host and port of its superuser URL.
fn upstream(stack: &Stack) -> SocketAddr {
    let base = stack
        .database_url
        .split_once('?')
        .map_or(stack.database_url.as_str(), |(base, _)| base);
    let (_, rest) = base.rsplit_once('@').expect("a URL with credentials");
    let authority = rest.split('/').next().expect("an authority");
    authority
        .parse()
        .expect("the stack listens on an IP address and port")
}

/// A throwaway CA (its PEM) and a server certificate it issued for [`WRONG_NAME`] only.
fn wrong_name_certificates() -> (String, Arc<rustls::ServerConfig>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "stack-harness wrong-name CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
        .expect("the CA certificate");
    let mut leaf = CertificateParams::new(vec![WRONG_NAME.to_owned()]).expect("leaf parameters");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a server key");
    let certificate = leaf.signed_by(&key, &ca).expect("the server certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![certificate.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("the server's TLS settings");
    (ca.pem(), Arc::new(config))
}

/// One client: TLS with the wrong name, then a verified TLS session to Postgres, relayed.
async fn relay(
    mut client: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Arc<AtomicUsize>,
    upstream: SocketAddr,
    upstream_tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    if request != SSL_REQUEST {
        // A plaintext start-up: the real server would refuse it too.
        return Ok(());
    }
    client.write_all(b"S").await?;
    let mut client = acceptor.accept(client).await?;
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    server.read_exact(&mut answer).await?;
    if answer != *b"S" {
        return Err(std::io::Error::other("the stack's Postgres refused TLS"));
    }
    let mut server = tokio_rustls::TlsConnector::from(upstream_tls)
        .connect(ServerName::IpAddress(upstream.ip().into()), server)
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

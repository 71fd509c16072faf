//! HTTPS delivery against a receiver whose certificate a test CA issued: trusted
//! through `ca_file`, refused (with a clear error) under the wrong CA.

mod common;

use std::sync::Arc;

use common::receiver::{Receiver, Reply};
use common::{CallSpec, Harness};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use siphook::config::Config;
use siphook::deliver::Delivery;
use tokio::sync::mpsc;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn https_receiver(issuer: &CertifiedIssuer<'static, KeyPair>) -> Receiver {
    https_receiver_with(issuer, None).await
}

/// An HTTPS receiver; with `client_ca`, it demands a client certificate from that CA.
async fn https_receiver_with(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    client_ca: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> Receiver {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Receiver::start_with(Arc::new(|_| Reply::status(200)), Some(Arc::new(server))).await
}

async fn start(rx: &Receiver, ca_pem: &str, dir: &tempfile::TempDir) -> (Harness, Delivery) {
    start_with(rx, ca_pem, dir, "").await
}

async fn start_with(
    rx: &Receiver,
    ca_pem: &str,
    dir: &tempfile::TempDir,
    extra: &str,
) -> (Harness, Delivery) {
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\n[[endpoints]]\nname = \"tls\"\nurl = \"https://localhost:{}/hook\"\nevents = [\"call.initiated\"]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nca_file = \"{}\"\nretry_schedule = [\"0s\"]\n{extra}\n",
        dir.path().join("outbox").display(),
        rx.addr.port(),
        ca_file.display()
    );
    let config = Config::parse(&text).unwrap();
    let mut h = Harness::with_config(config.clone()).await;
    let events = std::mem::replace(&mut h.gw.events, mpsc::channel(1).1);
    let outbox = siphook::deliver::open_outbox(&config).unwrap();
    let d = Delivery::start(&config, outbox, events, None, h.gw.metrics.clone()).unwrap();
    (h, d)
}

#[tokio::test]
async fn https_with_a_trusted_test_ca() {
    let issuer = ca("siphook test CA");
    let mut rx = https_receiver(&issuer).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, _d) = start(&rx, &issuer.pem(), &dir).await;
    h.send(&CallSpec::new("tls-1").invite(1)).await;
    let req = rx.next().await;
    assert_eq!(req.json()["call"]["sip_call_id"], "tls-1");
    h.wait_metric("siphook_deliveries_total", &[("outcome", "delivered")], 1.0)
        .await;
}

#[tokio::test]
async fn the_wrong_ca_fails_with_a_clear_error() {
    let issuer = ca("siphook test CA");
    let rx = https_receiver(&issuer).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, d) = start(&rx, &ca("some other CA").pem(), &dir).await;
    h.send(&CallSpec::new("tls-2").invite(1)).await;
    h.wait_metric("siphook_deadletters", &[("endpoint", "tls")], 1.0)
        .await;
    let dead = d.outbox.dead_letters(Some("tls")).unwrap();
    let error = dead[0].state.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "unclear error: {error}"
    );
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let server_ca = ca("siphook test CA");
    let client_ca = ca("siphook client CA");
    let mut rx = https_receiver_with(&server_ca, Some(&client_ca)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["siphook.test".to_owned()])
        .unwrap()
        .signed_by(&key, &client_ca)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let extra = format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
        cert_file.display(),
        key_file.display()
    );
    let (h, _d) = start_with(&rx, &server_ca.pem(), &dir, &extra).await;
    h.send(&CallSpec::new("mtls-1").invite(1)).await;
    assert_eq!(rx.next().await.json()["call"]["sip_call_id"], "mtls-1");

    // Without the certificate the receiver refuses the handshake.
    let other = tempfile::tempdir().unwrap();
    let (h2, d2) = start(&rx, &server_ca.pem(), &other).await;
    h2.send(&CallSpec::new("mtls-2").invite(1)).await;
    h2.wait_metric("siphook_deadletters", &[("endpoint", "tls")], 1.0)
        .await;
    assert!(
        d2.outbox.dead_letters(None).unwrap()[0]
            .state
            .last_error
            .is_some()
    );
}

/// A CA file renewed in place changes no setting, yet a reload must pick it up:
/// first refused under the old CA, then trusted after the file changes and the
/// configuration is reloaded unchanged.
#[tokio::test]
async fn a_ca_file_renewed_in_place_applies_on_reload() {
    let issuer = ca("siphook test CA");
    let mut rx = https_receiver(&issuer).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut d) = start(&rx, &ca("the old CA").pem(), &dir).await;
    h.send(&CallSpec::new("rotate-1").invite(1)).await;
    h.wait_metric("siphook_deadletters", &[("endpoint", "tls")], 1.0)
        .await;

    std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
    let text = format!(
        "[outbox]\npath = \"{}\"\n[[endpoints]]\nname = \"tls\"\nurl = \"https://localhost:{}/hook\"\nevents = [\"call.initiated\"]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nca_file = \"{}\"\nretry_schedule = [\"0s\"]\n\n",
        dir.path().join("outbox").display(),
        rx.addr.port(),
        dir.path().join("ca.pem").display()
    );
    let same = Config::parse(&text).unwrap();
    let summary = d.reload(&same).await.unwrap();
    assert_eq!(summary.changed, ["tls"]);
    h.send(&CallSpec::new("rotate-2").invite(1)).await;
    assert_eq!(rx.next().await.json()["call"]["sip_call_id"], "rotate-2");
    // A second reload with nothing changed touches nothing.
    let again = d.reload(&same).await.unwrap();
    assert_eq!(again, siphook::deliver::ReloadSummary::default());
}

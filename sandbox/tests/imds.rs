//! The IMDSv2-compatible endpoint, over real HTTP on loopback: the token flow,
//! every refusal the EC2 user guide documents, each metadata path and the
//! identity document.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use sandbox::imds::{self, Identity, IdentityDocument, ImdsHandle};

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";

fn identity() -> Identity {
    Identity {
        instance_id: "i-0abc1234def567890".into(),
        ami_id: "ami-0fedcba9876543210".into(),
        availability_zone: "us-east-1c".into(),
        region: "us-east-1".into(),
        local_ipv4: Ipv4Addr::new(127, 0, 0, 42),
        instance_type: "t3.small".into(),
        account_id: "123456789012".into(),
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build an HTTP client")
}

async fn started() -> (ImdsHandle, Client) {
    let handle = imds::start(identity(), loopback())
        .await
        .expect("start the IMDS endpoint");
    (handle, client())
}

/// `PUT /latest/api/token` with `ttl`, returning the token.
async fn token(imds: &ImdsHandle, http: &Client, ttl: &str) -> String {
    let response = http
        .put(format!("{}/latest/api/token", imds.endpoint()))
        .header(TTL, ttl)
        .send()
        .await
        .expect("PUT token");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(TTL).and_then(|v| v.to_str().ok()),
        Some(ttl),
        "the TTL header is echoed"
    );
    let token = response.text().await.expect("token body");
    assert!(token.len() >= 32, "opaque token: {token:?}");
    token
}

/// `GET path` with `token` (if any), returning status, content type and body.
async fn get(
    imds: &ImdsHandle,
    http: &Client,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = http.get(format!("{}{path}", imds.endpoint()));
    if let Some(token) = token {
        request = request.header(TOKEN, token);
    }
    let response = request.send().await.expect("GET metadata");
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.expect("body");
    (status, content_type, body)
}

#[tokio::test]
async fn token_flow_serves_metadata() {
    let (imds, http) = started().await;
    let token = token(&imds, &http, "21600").await;
    let (status, content_type, body) =
        get(&imds, &http, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "i-0abc1234def567890");

    // A token is reusable, and several can be live at once.
    let other = self::token(&imds, &http, "60").await;
    assert_ne!(token, other);
    for t in [&token, &other] {
        let (status, _, _) = get(&imds, &http, "/latest/meta-data/ami-id", Some(t)).await;
        assert_eq!(status, StatusCode::OK);
    }
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_metadata_path() {
    let (imds, http) = started().await;
    let token = token(&imds, &http, "300").await;
    let cases = [
        ("/latest/meta-data/instance-id", "i-0abc1234def567890"),
        ("/latest/meta-data/ami-id", "ami-0fedcba9876543210"),
        (
            "/latest/meta-data/placement/availability-zone",
            "us-east-1c",
        ),
        ("/latest/meta-data/placement/region", "us-east-1"),
        ("/latest/meta-data/local-ipv4", "127.0.0.42"),
        ("/latest/meta-data/instance-type", "t3.small"),
        (
            "/latest/meta-data/local-hostname",
            "ip-127-0-0-42.ec2.internal",
        ),
        ("/latest/meta-data/hostname", "ip-127-0-0-42.ec2.internal"),
        ("/latest/meta-data/placement/", "availability-zone\nregion"),
        ("/latest/dynamic/", "instance-identity/"),
        ("/latest/dynamic/instance-identity/", "document"),
        ("/latest/", "dynamic/\nmeta-data/"),
        ("/", "latest"),
    ];
    for (path, want) in cases {
        let (status, content_type, body) = get(&imds, &http, path, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            content_type.starts_with("text/plain"),
            "{path}: {content_type}"
        );
        assert_eq!(body, want, "{path}");
    }

    let (status, _, listing) = get(&imds, &http, "/latest/meta-data/", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<&str> = listing.lines().collect();
    for entry in [
        "ami-id",
        "instance-id",
        "instance-type",
        "local-ipv4",
        "placement/",
    ] {
        assert!(entries.contains(&entry), "{entry} missing from {listing:?}");
    }

    for path in [
        "/latest/meta-data/no-such-thing",
        "/latest/meta-data/instance-id/",
        "/latest/user-data",
        "/2021-03-23/meta-data/instance-id",
        "/nope",
    ] {
        let (status, _, _) = get(&imds, &http, path, Some(&token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn identity_document_has_the_documented_fields() {
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let (imds, http) = started().await;
    let token = token(&imds, &http, "300").await;
    let (status, content_type, body) = get(
        &imds,
        &http,
        "/latest/dynamic/instance-identity/document",
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");

    let doc: IdentityDocument = serde_json::from_str(&body).expect("typed document");
    assert_eq!(doc.instance_id, "i-0abc1234def567890");
    assert_eq!(doc.image_id, "ami-0fedcba9876543210");
    assert_eq!(doc.availability_zone, "us-east-1c");
    assert_eq!(doc.region, "us-east-1");
    assert_eq!(doc.private_ip, "127.0.0.42");
    assert_eq!(doc.instance_type, "t3.small");
    assert_eq!(doc.account_id, "123456789012");
    assert_eq!(doc.architecture, "x86_64");
    assert_eq!(doc.version, "2017-09-30");
    let pending = humantime::parse_rfc3339(&doc.pending_time).expect("RFC 3339 pendingTime");
    assert!(pending >= before, "{}", doc.pending_time);

    // The raw JSON uses AWS's camelCase names, nulls included.
    let raw: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for key in [
        "accountId",
        "architecture",
        "availabilityZone",
        "billingProducts",
        "devpayProductCodes",
        "marketplaceProductCodes",
        "imageId",
        "instanceId",
        "instanceType",
        "kernelId",
        "pendingTime",
        "privateIp",
        "ramdiskId",
        "region",
        "version",
    ] {
        assert!(raw.get(key).is_some(), "{key} missing from {body}");
    }

    // The document is fixed for the instance's life.
    let (_, _, again) = get(
        &imds,
        &http,
        "/latest/dynamic/instance-identity/document",
        Some(&token),
    )
    .await;
    assert_eq!(body, again);
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn get_without_or_with_a_bad_token_is_401() {
    let (imds, http) = started().await;
    for path in ["/latest/meta-data/instance-id", "/latest/meta-data/nope"] {
        let (status, _, _) = get(&imds, &http, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        let (status, _, _) = get(&imds, &http, path, Some("not-a-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with a bad token");
    }
    // A token from another endpoint (another instance) is not valid here.
    let other = imds::start(identity(), loopback())
        .await
        .expect("start a second endpoint");
    let foreign = token(&other, &http, "300").await;
    let (status, _, _) = get(
        &imds,
        &http,
        "/latest/meta-data/instance-id",
        Some(&foreign),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    other.shutdown().await.expect("clean shutdown");
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_ttl_is_400() {
    let (imds, http) = started().await;
    let url = format!("{}/latest/api/token", imds.endpoint());
    let missing = http.put(&url).send().await.expect("PUT token");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST, "missing TTL");
    for ttl in ["0", "21601", "-1", "ten", "", "1.5"] {
        let response = http
            .put(&url)
            .header(TTL, ttl)
            .send()
            .await
            .expect("PUT token");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "TTL {ttl:?}");
    }
    // Both ends of the range are valid.
    token(&imds, &http, "1").await;
    token(&imds, &http, "21600").await;
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let (imds, http) = started().await;
    let token = token(&imds, &http, "1").await;
    let (status, _, _) = get(&imds, &http, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "fresh token");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, _) = get(&imds, &http, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired token");
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn proxied_requests_are_403() {
    let (imds, http) = started().await;
    let response = http
        .put(format!("{}/latest/api/token", imds.endpoint()))
        .header(TTL, "60")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("PUT token");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "proxied PUT");

    let token = token(&imds, &http, "60").await;
    let response = http
        .get(format!("{}/latest/meta-data/instance-id", imds.endpoint()))
        .header(TOKEN, &token)
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("GET metadata");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "proxied GET");
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn wrong_methods_and_token_paths() {
    let (imds, http) = started().await;
    let versioned = http
        .put(format!("{}/2021-03-23/api/token", imds.endpoint()))
        .header(TTL, "60")
        .send()
        .await
        .expect("PUT versioned token");
    assert_eq!(versioned.status(), StatusCode::FORBIDDEN);

    let token = token(&imds, &http, "60").await;
    for method in [Method::POST, Method::DELETE] {
        let response = http
            .request(
                method.clone(),
                format!("{}/latest/meta-data/instance-id", imds.endpoint()),
            )
            .header(TOKEN, &token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
    let head = http
        .head(format!("{}/latest/meta-data/instance-id", imds.endpoint()))
        .header(TOKEN, &token)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK);
    imds.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_frees_the_port() {
    let (imds, http) = started().await;
    let addr = imds.addr();
    assert_ne!(addr.port(), 0, "the real port is reported");
    token(&imds, &http, "60").await; // leaves a pooled keep-alive connection
    tokio::time::timeout(Duration::from_secs(10), imds.shutdown())
        .await
        .expect("shutdown does not hang on idle connections")
        .expect("clean shutdown");
    let again = imds::start(identity(), addr)
        .await
        .expect("the same port can be bound again");
    assert_eq!(again.addr(), addr);
    again.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let (imds, http) = started().await;
    let url = format!("{}/latest/api/token", imds.endpoint());
    drop(imds);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client(); // no pooled connection to an old server
        if fresh.put(&url).header(TTL, "60").send().await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server still answering after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(http);
}

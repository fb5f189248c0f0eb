//! An object store over the S3 API: Ceph's RADOS Gateway, Aliyun OSS (its
//! S3-compatible endpoint), AWS S3 or any other. Objects are private; every call
//! is retried with backoff before it fails.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, BucketConfiguration, Region};

use super::{ObjectStore, StoreError, StoreResult};

const ATTEMPTS: u32 = 4;

pub struct S3Store {
    bucket: Box<Bucket>,
    prefix: String,
}

/// Where the store is: parsed from `s3://BUCKET?endpoint=URL&region=R&path_style=true&prefix=P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Backend(format!("not an s3:// URL: {url}")))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(StoreError::Backend("the s3:// URL names no bucket".into()));
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            prefix: String::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "endpoint" => loc.endpoint = Some(v),
                "region" => loc.region = v,
                "path_style" => loc.path_style = v == "true" || v == "1",
                "prefix" => loc.prefix = v,
                other => {
                    return Err(StoreError::Backend(format!(
                        "unknown s3 URL parameter {other}"
                    )));
                }
            }
        }
        Ok(loc)
    }
}

/// Credentials from `PAN_S3_ACCESS_KEY`/`PAN_S3_SECRET_KEY`, or from the file named
/// by `PAN_S3_CREDENTIALS_FILE` (lines `access_key = …` and `secret_key = …`).
fn credentials() -> Result<Credentials, StoreError> {
    let (mut access, mut secret) = (
        std::env::var("PAN_S3_ACCESS_KEY").ok(),
        std::env::var("PAN_S3_SECRET_KEY").ok(),
    );
    if let Ok(path) = std::env::var("PAN_S3_CREDENTIALS_FILE") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StoreError::Backend(format!("reading {path}: {e}")))?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "access_key" => access = Some(v.trim().to_string()),
                    "secret_key" => secret = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
    }
    let (Some(access), Some(secret)) = (access, secret) else {
        return Err(StoreError::Backend(
            "S3 credentials missing: set PAN_S3_ACCESS_KEY and PAN_S3_SECRET_KEY, or PAN_S3_CREDENTIALS_FILE".into(),
        ));
    };
    Credentials::new(Some(&access), Some(&secret), None, None, None)
        .map_err(|e| StoreError::Backend(e.to_string()))
}

fn backend(e: S3Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn is_not_found(e: &S3Error) -> bool {
    matches!(e, S3Error::HttpFailWithBody(404, _))
}

async fn with_retries<T, F, Fut>(what: &str, op: F) -> Result<T, S3Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, S3Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && !is_not_found(&e) => {
                tracing::debug!(what, attempt, error = %e, "S3 call failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl S3Store {
    /// Opens the bucket, creating it (private) when it does not exist.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let loc = S3Location::parse(url)?;
        let region = match &loc.endpoint {
            Some(endpoint) => Region::Custom {
                region: loc.region.clone(),
                endpoint: endpoint.clone(),
            },
            None => loc
                .region
                .parse()
                .map_err(|e| StoreError::Backend(format!("region {}: {e}", loc.region)))?,
        };
        let creds = credentials()?;
        let mut bucket =
            Bucket::new(&loc.bucket, region.clone(), creds.clone()).map_err(backend)?;
        if loc.path_style {
            bucket = bucket.with_path_style();
        }
        let exists = with_retries("head bucket", || bucket.exists())
            .await
            .map_err(backend)?;
        if !exists {
            let created = if loc.path_style {
                Bucket::create_with_path_style(
                    &loc.bucket,
                    region,
                    creds,
                    BucketConfiguration::private(),
                )
                .await
            } else {
                Bucket::create(&loc.bucket, region, creds, BucketConfiguration::private()).await
            };
            created.map_err(backend)?;
        }
        Ok(Self {
            bucket,
            prefix: loc.prefix,
        })
    }

    fn path(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let path = self.path(key);
        with_retries("put", || self.bucket.put_object(&path, &data))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let path = self.path(key);
        match with_retries("get", || self.bucket.get_object(&path)).await {
            Ok(resp) => Ok(Some(resp.bytes().clone())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>> {
        let path = self.path(key);
        let last = start + len.max(1) - 1;
        match with_retries("get_range", || {
            self.bucket.get_object_range(&path, start, Some(last))
        })
        .await
        {
            Ok(resp) if resp.bytes().len() as u64 == len => Ok(Some(resp.bytes().clone())),
            Ok(resp) => Err(StoreError::Backend(format!(
                "{key}: asked for {len} bytes from {start}, got {}",
                resp.bytes().len()
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key);
        match with_retries("delete", || self.bucket.delete_object(&path)).await {
            Err(e) if !is_not_found(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::S3Location;

    #[test]
    fn parses_store_urls() {
        let loc = S3Location::parse(
            "s3://pan?endpoint=http://127.0.0.1:7480&region=default&path_style=true&prefix=t1/",
        )
        .expect("parse");
        assert_eq!(loc.bucket, "pan");
        assert_eq!(loc.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
        assert!(loc.path_style);
        assert_eq!(loc.prefix, "t1/");
        assert!(S3Location::parse("s3://?x").is_err());
        assert!(S3Location::parse("s3://b?nonsense=1").is_err());
        assert_eq!(
            S3Location::parse("s3://b").expect("plain").region,
            "us-east-1"
        );
    }
}

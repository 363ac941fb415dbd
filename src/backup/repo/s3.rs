//! A backup repository in an S3-compatible bucket (AWS, MinIO, SeaweedFS, Ceph, …). Large objects
//! go up as multipart uploads, a few parts in flight at a time; an upload that does not receive its
//! end marker is aborted, so a failed backup leaves no object behind.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete,
    ObjectIdentifier, ObjectLockEnabled, ObjectLockMode,
};
use bytes::Bytes;
use chrono::DateTime;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, PendingUpload, RepoError};
use crate::backup::object_lock::ObjectLock;

/// How many parts upload at once: enough to hide latency, few enough to bound memory.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `--s3-endpoint`; falls back to `AWS_ENDPOINT_URL`, then AWS itself.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); on by default with a custom endpoint.
    pub path_style: Option<bool>,
    pub region: Option<String>,
    /// An AWS profile for this repository's credentials (a second store with keys of its own);
    /// none: the standard chain (AWS_ACCESS_KEY_ID…, AWS_PROFILE).
    pub profile: Option<String>,
}

pub struct S3Repo {
    client: Client,
    bucket: String,
    prefix: String,
    /// Set by `require_object_lock`: the retention each backup object and manifest is put with.
    lock: Option<ObjectLock>,
}

impl S3Repo {
    pub async fn open(
        bucket: String,
        prefix: String,
        options: &S3Options,
    ) -> Result<Self, RepoError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &options.profile {
            // The profile's keys, and only those: in the default chain AWS_ACCESS_KEY_ID (the
            // first repository's keys, in a copy) would come before any profile.
            loader = loader.profile_name(profile).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .profile_name(profile)
                    .build(),
            );
        }
        let shared = loader
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            )
            .load()
            .await;
        // Fail early and plainly when no credentials exist, instead of a vague network error later.
        if let Some(provider) = shared.credentials_provider() {
            use aws_sdk_s3::config::ProvideCredentials;
            if let Err(e) = provider.provide_credentials().await {
                return Err(RepoError::S3 {
                    location: describe(&bucket, &prefix),
                    operation: "loading credentials".into(),
                    reason: format!(
                        "no usable AWS credentials ({e}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                    ),
                });
            }
        }
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty());
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &endpoint {
            if url::Url::parse(endpoint).is_err() {
                return Err(RepoError::BadLocation(format!(
                    "--s3-endpoint: '{endpoint}' is not a URL; give e.g. https://s3.moh.gov.kh or http://127.0.0.1:9000"
                )));
            }
            config = config.endpoint_url(endpoint);
        }
        config = config.force_path_style(options.path_style.unwrap_or(endpoint.is_some()));
        if let Some(region) = &options.region {
            config = config.region(Region::new(region.clone()));
        } else if shared.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        let repo = Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix,
            lock: None,
        };
        repo.client
            .head_bucket()
            .bucket(&repo.bucket)
            .send()
            .await
            .map_err(|e| repo.error("checking the bucket", &e))?;
        Ok(repo)
    }

    pub fn describe(&self) -> String {
        describe(&self.bucket, &self.prefix)
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    fn relative_key<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
        }
    }

    fn error<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> RepoError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        RepoError::S3 {
            location: self.describe(),
            operation: operation.to_string(),
            reason: describe_s3_error(err),
        }
    }

    /// Checks, before anything is written, that the bucket has Object Lock enabled (which on S3
    /// implies versioning), then puts every later backup object and manifest under `lock`.
    pub async fn require_object_lock(&mut self, lock: ObjectLock) -> Result<(), RepoError> {
        let not_enabled = || RepoError::ObjectLockNotEnabled {
            location: self.describe(),
            bucket: self.bucket.clone(),
        };
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out)
                if out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled) => {}
            Ok(_) => return Err(not_enabled()),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ObjectLockConfigurationNotFoundError") =>
            {
                return Err(not_enabled());
            }
            Err(e) => return Err(self.error("reading the bucket's object lock configuration", &e)),
        }
        let versioning = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.error("reading the bucket's versioning", &e))?;
        if versioning.status() != Some(&BucketVersioningStatus::Enabled) {
            return Err(not_enabled());
        }
        self.lock = Some(lock);
        Ok(())
    }

    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.lock
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        self.put(key, data, false)
            .await
            .map_err(|e| self.error(&format!("writing {key}"), &e))
    }

    /// A plain PUT; `locked` puts it under the repository's object lock, with the checksum S3
    /// demands of such a PUT.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        locked: bool,
    ) -> Result<(), SdkError<aws_sdk_s3::operation::put_object::PutObjectError, HttpResponse>> {
        let lock = self.lock.filter(|_| locked);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_object_lock_mode(lock.map(|l| ObjectLockMode::from(l.mode.as_s3())))
            .set_object_lock_retain_until_date(lock.map(|l| s3_date(l.retain_until)))
            .set_checksum_algorithm(lock.map(|_| ChecksumAlgorithm::Crc32))
            .body(ByteStream::from(data))
            .send()
            .await
            .map(|_| ())
    }

    /// `If-None-Match: *`: the store refuses to replace an existing object (412), so two
    /// backups can never write the same lease or manifest.
    pub async fn put_bytes_if_absent(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        self.put_if_absent(key, data, false).await
    }

    /// `put_bytes_if_absent` under the repository's object lock, if it has one: the manifest,
    /// as immutable as the objects it names.
    pub async fn put_locked_if_absent(&self, key: &str, data: Bytes) -> Result<(), RepoError> {
        self.put_if_absent(key, data, true).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes, locked: bool) -> Result<(), RepoError> {
        let data_again = data.clone();
        let lock = self.lock.filter(|_| locked);
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .set_object_lock_mode(lock.map(|l| ObjectLockMode::from(l.mode.as_s3())))
            .set_object_lock_retain_until_date(lock.map(|l| s3_date(l.retain_until)))
            .set_checksum_algorithm(lock.map(|_| ChecksumAlgorithm::Crc32))
            .body(ByteStream::from(data))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Err(RepoError::AlreadyExists {
                    location: self.describe(),
                    key: key.to_string(),
                })
            }
            // Stores without conditional writes: check, then write (a race is left to the
            // 32 random bits of the id).
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                if self.exists(key).await? {
                    return Err(RepoError::AlreadyExists {
                        location: self.describe(),
                        key: key.to_string(),
                    });
                }
                self.put(key, data_again, locked)
                    .await
                    .map_err(|e| self.error(&format!("writing {key}"), &e))
            }
            Err(e) => Err(self.error(&format!("writing {key}"), &e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, RepoError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.error(&format!("checking {key}"), &e)),
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, RepoError> {
        let out = self.get(key).await?;
        let data = out.body.collect().await.map_err(|e| RepoError::S3 {
            location: self.describe(),
            operation: format!("reading {key}"),
            reason: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    async fn get(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, RepoError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(out),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(RepoError::NotFound {
                    location: self.describe(),
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.error(&format!("reading {key}"), &e)),
        }
    }

    pub async fn open_reader(&self, key: &str) -> Result<ObjectReader, RepoError> {
        let out = self.get(key).await?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RepoError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("listing backups", &e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ObjectMeta {
                    key: self.relative_key(key).to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    last_modified: obj
                        .last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, keys: &[String]) -> Result<(), RepoError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RepoError::S3 {
                    location: self.describe(),
                    operation: "deleting".into(),
                    reason: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| RepoError::S3 {
                    location: self.describe(),
                    operation: "deleting".into(),
                    reason: e.to_string(),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("deleting expired objects", &e))?;
            if let Some(err) = out.errors().first() {
                return Err(RepoError::S3 {
                    location: self.describe(),
                    operation: format!("deleting {}", err.key().unwrap_or("?")),
                    reason: format!(
                        "{}: {}",
                        err.code().unwrap_or("error"),
                        err.message().unwrap_or("")
                    ),
                });
            }
        }
        Ok(())
    }

    pub async fn upload(
        &self,
        key: &str,
        mut chunks: mpsc::Receiver<Chunk>,
    ) -> Result<u64, RepoError> {
        let abandoned = || RepoError::Abandoned {
            location: self.describe(),
            key: key.to_string(),
        };
        // One part and the end marker: a plain PUT.
        let first = match chunks.recv().await {
            Some(Chunk::Data(d)) => d,
            Some(Chunk::End) => Bytes::new(),
            None => return Err(abandoned()),
        };
        let second = if first.is_empty() {
            Some(Chunk::End)
        } else {
            chunks.recv().await
        };
        match second {
            None => Err(abandoned()),
            Some(Chunk::End) => {
                let size = first.len() as u64;
                self.put(key, first, true)
                    .await
                    .map_err(|e| self.error(&format!("writing {key}"), &e))?;
                Ok(size)
            }
            Some(Chunk::Data(second)) => {
                let full_key = self.full_key(key);
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full_key)
                    .set_object_lock_mode(self.lock.map(|l| ObjectLockMode::from(l.mode.as_s3())))
                    .set_object_lock_retain_until_date(self.lock.map(|l| s3_date(l.retain_until)))
                    .set_checksum_algorithm(self.lock.map(|_| ChecksumAlgorithm::Crc32))
                    .send()
                    .await
                    .map_err(|e| self.error(&format!("starting the upload of {key}"), &e))?;
                let upload_id = created.upload_id().unwrap_or_default().to_string();
                let result = self
                    .upload_parts(key, &full_key, &upload_id, [first, second], &mut chunks)
                    .await;
                if result.is_err() {
                    // Best effort: the server also expires it, and `prune` aborts stale ones.
                    let _ = self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&full_key)
                        .upload_id(&upload_id)
                        .send()
                        .await;
                }
                result
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        full_key: &str,
        upload_id: &str,
        first_two: [Bytes; 2],
        chunks: &mut mpsc::Receiver<Chunk>,
    ) -> Result<u64, RepoError> {
        let mut in_flight = FuturesUnordered::new();
        let mut completed: Vec<CompletedPart> = Vec::new();
        let mut queued: std::collections::VecDeque<Bytes> = first_two.into_iter().collect();
        let mut part_number = 0i32;
        let mut size = 0u64;
        let mut ended = false;
        loop {
            while in_flight.len() < PARTS_IN_FLIGHT
                && let Some(data) = queued.pop_front()
            {
                part_number += 1;
                size += data.len() as u64;
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .set_checksum_algorithm(self.lock.map(|_| ChecksumAlgorithm::Crc32))
                    .body(ByteStream::from(data))
                    .send();
                let n = part_number;
                in_flight.push(async move { (n, request.await) });
            }
            if !ended && queued.is_empty() && in_flight.len() < PARTS_IN_FLIGHT {
                match chunks.recv().await {
                    Some(Chunk::Data(d)) => {
                        queued.push_back(d);
                        continue;
                    }
                    Some(Chunk::End) => ended = true,
                    None => {
                        return Err(RepoError::Abandoned {
                            location: self.describe(),
                            key: key.to_string(),
                        });
                    }
                }
            }
            match in_flight.next().await {
                Some((n, Ok(out))) => completed.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                ),
                Some((n, Err(e))) => {
                    return Err(self.error(&format!("uploading part {n} of {key}"), &e));
                }
                None if ended && queued.is_empty() => break,
                None => {}
            }
        }
        completed.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error(&format!("completing the upload of {key}"), &e))?;
        Ok(size)
    }

    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, RepoError> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| self.error("listing unfinished uploads", &e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: self.relative_key(key).to_string(),
                    upload_id: id.to_string(),
                    initiated: upload
                        .initiated()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), 0))
                        .unwrap_or_default(),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), RepoError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Completed or aborted meanwhile: nothing left to abort.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(self.error(
                &format!("aborting the unfinished upload of {}", upload.key),
                &e,
            )),
        }
    }
}

fn s3_date(t: chrono::DateTime<chrono::Utc>) -> aws_sdk_s3::primitives::DateTime {
    aws_sdk_s3::primitives::DateTime::from_secs(t.timestamp())
}

fn describe(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

/// A one-line reason with a hint a ministry IT officer can act on.
pub fn describe_s3_error<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::DispatchFailure(failure) => {
            let mut reason = "the S3 endpoint is not reachable".to_string();
            if let Some(conn) = failure.as_connector_error() {
                reason.push_str(&format!(" ({})", error_chain(conn)));
            }
            reason + "; check --s3-endpoint / AWS_ENDPOINT_URL and the network"
        }
        SdkError::TimeoutError(_) => {
            "the S3 endpoint did not answer in time; check --s3-endpoint and the network".into()
        }
        SdkError::ConstructionFailure(_) => format!(
            "the request could not be built ({}); are AWS credentials configured (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)?",
            error_chain(err)
        ),
        SdkError::ServiceError(service) => {
            let e = service.err();
            // HEAD answers carry no body, so the status is all there is to go on.
            let code = match (e.code(), service.raw().status().as_u16()) {
                (Some(code), _) => code,
                (None, 404) => "NotFound",
                (None, 403) => "Forbidden",
                (None, _) => "",
            };
            let message = e.message().unwrap_or("");
            match code {
                "NoSuchBucket" | "NotFound" => {
                    "the bucket does not exist; create it or fix the bucket in --repo".into()
                }
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AccessDenied"
                | "Forbidden"
                | "InvalidToken"
                | "ExpiredToken" => format!(
                    "the credentials were refused ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile) for this endpoint"
                ),
                "" => format!("the server answered with an error ({})", error_chain(err)),
                _ if message.is_empty() => code.to_string(),
                _ => format!("{code}: {message}"),
            }
        }
        _ => error_chain(err),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

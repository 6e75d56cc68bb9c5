//! Raw gRPC calls: any method of the contract with a request built at run time (prost-reflect),
//! sent as bytes over the real mTLS channel, for tests generated from the descriptor set.

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Passes bytes through unchanged in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The contract's descriptors.
pub fn pool() -> DescriptorPool {
    DescriptorPool::decode(pm_api::FILE_DESCRIPTOR_SET).expect("the contract's descriptor set")
}

/// A method's input message and whether it answers with a stream.
pub fn method(pool: &DescriptorPool, path: &str) -> Option<(MessageDescriptor, bool)> {
    let (service, name) = path.trim_start_matches('/').split_once('/')?;
    let method = pool
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)?;
    Some((method.input(), method.is_server_streaming()))
}

/// Calls `path` with `body` (an encoded request): the first answer's bytes, or the status. A
/// streaming method's first message is awaited at most `wait`; a stream that stays open and silent
/// that long counts as accepted (`Ok` with no bytes).
pub async fn call<T>(
    channel: T,
    path: &str,
    streaming: bool,
    body: Bytes,
    wait: Duration,
) -> Result<Bytes, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {}", e.into())))?;
    let path = PathAndQuery::try_from(path.to_string())
        .map_err(|_| Status::invalid_argument("bad method path"))?;
    let request = tonic::Request::new(body);
    if !streaming {
        return grpc
            .unary(request, path, RawCodec)
            .await
            .map(|r| r.into_inner());
    }
    let mut stream = grpc
        .server_streaming(request, path, RawCodec)
        .await?
        .into_inner();
    match tokio::time::timeout(wait, stream.message()).await {
        Ok(Ok(Some(first))) => Ok(first),
        Ok(Ok(None)) => Ok(Bytes::new()),
        Ok(Err(status)) => Err(status),
        Err(_) => Ok(Bytes::new()),
    }
}

/// Sets the string at dotted `path` of `message` (creating the messages on the way); a repeated
/// field gets `value` as its one element.
pub fn set_path(message: &mut DynamicMessage, path: &str, value: &str) -> anyhow::Result<()> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let field = message
        .descriptor()
        .get_field_by_name(head)
        .ok_or_else(|| {
            anyhow::anyhow!("no field {head} in {}", message.descriptor().full_name())
        })?;
    match rest {
        None if field.is_list() => {
            message.set_field(&field, Value::List(vec![Value::String(value.into())]))
        }
        None => message.set_field(&field, Value::String(value.into())),
        Some(rest) => {
            let mut inner = match message.get_field(&field).as_ref() {
                Value::Message(m) => m.clone(),
                _ => {
                    let prost_reflect::Kind::Message(descriptor) = field.kind() else {
                        anyhow::bail!("{head} is not a message");
                    };
                    DynamicMessage::new(descriptor)
                }
            };
            set_path(&mut inner, rest, value)?;
            message.set_field(&field, Value::Message(inner));
        }
    }
    Ok(())
}

//! `herald.v1.EventService`.

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    auth::Access,
    catalog::catalog,
    convert,
    error::{Error, Result},
    filter::Filter,
    ids::{self, Kind},
    metrics,
    proto::{
        self, GetEventRequest, ListEventTypesRequest, ListEventTypesResponse, ListEventsRequest,
        ListEventsResponse, PublishBatchRequest, PublishBatchResponse, PublishError,
        PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse,
        SubscribeRequest, SubscribeResponse, event_service_server::EventService,
        publish_stream_response, subscribe_request,
    },
    publish,
    state::State,
    store::{
        events::{Committed, EventQuery, NewEvent},
        page::Page,
    },
    tail::{self, Start, Tail},
    time, wire,
};

/// Most events in one `PublishBatch`.
pub const MAX_BATCH: usize = 1000;
/// Stream items validated and queued ahead of the one being answered.
const STREAM_PIPELINE: usize = 64;

pub struct EventApi {
    state: State,
}

impl EventApi {
    pub fn new(state: State) -> Self {
        EventApi { state }
    }

    /// Validates and stores a `PublishBatch`, atomically.
    async fn publish_items(
        &self,
        principal: &crate::auth::Principal,
        items: Vec<PublishRequest>,
    ) -> Result<PublishBatchResponse> {
        if items.is_empty() {
            return Err(Error::invalid("events", "must hold at least one event"));
        }
        if items.len() > MAX_BATCH {
            return Err(Error::invalid(
                "events",
                format!(
                    "holds {} events, more than the limit of {MAX_BATCH}",
                    items.len()
                ),
            ));
        }
        let mut new = Vec::with_capacity(items.len());
        let mut payloads = Vec::with_capacity(items.len());
        let mut tenants = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let prefix = format!("events[{i}]");
            let tenant = principal
                .tenant_for(&item.tenant_id, Access::Publish)
                .map_err(|e| e.within(&prefix))?;
            if !tenants.contains(&tenant) {
                tenants.push(tenant.clone());
            }
            let (event, payload) = publish::validate_keeping_payload(
                &tenant,
                item,
                self.state.config.max_payload_bytes,
            )
            .map_err(|e| e.within(&prefix))?;
            new.push(event);
            payloads.push(payload);
        }
        for tenant in &tenants {
            self.state.require_tenant(tenant).await?;
        }
        let committed = self.state.writer.submit(new).await?;
        Ok(PublishBatchResponse {
            results: committed
                .into_iter()
                .zip(payloads)
                .map(|(c, payload)| response(c, payload))
                .collect(),
        })
    }
}

/// The answer for `c`; `payload` is the request's payload encoded as a `Struct`, which a
/// new event stored unchanged (a duplicate answers with the original's stored payload),
/// or `None` for an answer without the payload (`omit_payload`).
fn response(c: Committed, payload: Option<Bytes>) -> PublishResponse {
    let outcome = if c.duplicate {
        metrics::Published::Duplicate
    } else {
        metrics::Published::Stored
    };
    metrics::event_published(&c.event.event_type, outcome);
    let Some(payload) = payload else {
        let event = convert::event_omitting_payload(&c.event);
        return PublishResponse::new(event, c.duplicate, c.deliveries);
    };
    if c.duplicate {
        return PublishResponse::new(convert::event(&c.event), true, c.deliveries);
    }
    let event = convert::event_without_payload(&c.event);
    PublishResponse::encoded(
        wire::encode_event_with_payload(&event, &payload),
        false,
        c.deliveries,
    )
}

/// Authorises and validates one publish of an already authenticated principal.
async fn prepare(
    state: &State,
    principal: &crate::auth::Principal,
    req: PublishRequest,
) -> Result<(NewEvent, Option<Bytes>)> {
    let tenant = principal.tenant_for(&req.tenant_id, Access::Publish)?;
    let prepared = publish::validate_keeping_payload(&tenant, req, state.config.max_payload_bytes)?;
    state.require_tenant(&tenant).await?;
    Ok(prepared)
}

fn single(mut committed: Vec<Committed>, payload: Option<Bytes>) -> Result<PublishResponse> {
    committed
        .pop()
        .map(|c| response(c, payload))
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("writer returned no result")))
}

fn stream_answer(request_id: String, result: Result<PublishResponse>) -> PublishStreamResponse {
    let result = match result {
        Ok(published) => publish_stream_response::Result::Published(published),
        Err(err) => {
            let status = Status::from(err);
            publish_stream_response::Result::Error(PublishError {
                code: status.code() as i32,
                message: status.message().to_string(),
            })
        }
    };
    PublishStreamResponse {
        request_id,
        result: Some(result),
    }
}

fn start_of(req: &SubscribeRequest) -> Result<Start> {
    Ok(match &req.start {
        None | Some(subscribe_request::Start::Live(_)) => Start::Live,
        Some(subscribe_request::Start::Earliest(_)) => Start::Earliest,
        Some(subscribe_request::Start::AfterCursor(c)) => {
            Start::AfterSeq(tail::decode_cursor("after_cursor", c)?)
        }
        Some(subscribe_request::Start::Since(ts)) => {
            Start::SinceMicros(time::from_timestamp("since", ts)?)
        }
    })
}

fn environment_filter(env: &str) -> Result<Option<String>> {
    publish::validate::validate_environment("environment", env)?;
    Ok((!env.is_empty()).then(|| env.to_string()))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let principal = self.state.principal(&request).await?;
        let req = request.into_inner();
        let event_type = metrics::event_type_label(&req.type_name, req.r#type);
        // A tenant key's own tenant, or the one an admin names (checked in `prepare`).
        let tenant = principal.tenant_id.as_deref().unwrap_or(&req.tenant_id);
        let span = tracing::info_span!(
            "publish",
            tenant_id = tenant,
            event_type,
            event_id = tracing::field::Empty,
        );
        let published = async {
            let (new, payload) = prepare(&self.state, &principal, req).await?;
            let committed = self.state.writer.submit(vec![new]).await?;
            single(committed, payload)
        };
        match published.instrument(span.clone()).await {
            Ok(answer) => {
                if let Some(event) = &answer.event {
                    span.record("event_id", event.id.as_str());
                }
                span.in_scope(|| {
                    tracing::debug!(
                        duplicate = answer.duplicate,
                        deliveries = answer.deliveries,
                        "published"
                    )
                });
                Ok(Response::new(answer))
            }
            Err(err) => {
                metrics::event_refused(event_type, &err);
                Err(err.into())
            }
        }
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let principal = self.state.principal(&request).await?;
        let items = request.into_inner().events;
        let types: Vec<&'static str> = items
            .iter()
            .map(|item| metrics::event_type_label(&item.type_name, item.r#type))
            .collect();
        let span = tracing::info_span!(
            "publish_batch",
            tenant_id = principal.tenant_id.as_deref(),
            events = items.len()
        );
        let published = self.publish_items(&principal, items).instrument(span);
        match published.await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(err) => {
                // The batch is atomic: every event in it was refused.
                for event_type in types {
                    metrics::event_refused(event_type, &err);
                }
                Err(err.into())
            }
        }
    }

    type PublishStreamStream = BoxStream<PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let principal = self.state.principal(&request).await?;
        let incoming = request.into_inner();
        // Three stages keep both the answers and the stored events in request order
        // while up to STREAM_PIPELINE items are in flight (sharing group commits):
        // validate concurrently (`buffered` yields in order), queue to the writer one
        // by one in that order, then await the commits concurrently, in order again.
        // `buffered` also bounds what is read ahead: the stream's flow control.
        let (validate_state, writer) = (self.state.clone(), self.state.writer.clone());
        let answers = incoming
            .map(move |item| {
                let (state, principal) = (validate_state.clone(), principal.clone());
                async move {
                    let item = item?;
                    let (event_type, prepared) = match item.event {
                        None => ("unknown", Err(Error::invalid("event", "is required"))),
                        Some(event) => (
                            metrics::event_type_label(&event.type_name, event.r#type),
                            prepare(&state, &principal, event).await,
                        ),
                    };
                    Ok::<_, Status>((item.request_id, event_type, prepared))
                }
            })
            .buffered(STREAM_PIPELINE)
            .then(move |prepared| {
                let writer = writer.clone();
                async move {
                    let (request_id, event_type, prepared) = prepared?;
                    let queued = match prepared {
                        Ok((new, payload)) => writer
                            .enqueue(vec![new])
                            .await
                            .map(|commit| (commit, payload)),
                        Err(err) => Err(err),
                    };
                    Ok::<_, Status>((request_id, event_type, queued))
                }
            })
            .map(|queued| async move {
                let (request_id, event_type, queued) = queued?;
                let result = match queued {
                    Ok((commit, payload)) => commit.await.and_then(|c| single(c, payload)),
                    Err(err) => Err(err),
                };
                if let Err(err) = &result {
                    metrics::event_refused(event_type, err);
                }
                Ok(stream_answer(request_id, result))
            })
            .buffered(STREAM_PIPELINE);
        Ok(Response::new(Box::pin(answers)))
    }

    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (principal, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Read)
            .await?;
        let req = request.into_inner();
        let filter = Filter::parse("filters", &req.filters)?;
        let start = start_of(&req)?;
        let tail = Tail {
            store: self.state.store.clone(),
            bus: self.state.bus.clone(),
            query: EventQuery {
                tenant_id: tenant,
                types: filter.names(),
                environment: environment_filter(&req.environment)?,
            },
            filter,
            start,
            heartbeat: Duration::from_secs(self.state.config.heartbeat_interval_secs),
            shutdown: self.state.shutdown.clone(),
            key_id: principal.key_id.clone(),
        };
        let span = tracing::info_span!(
            "tail",
            tenant_id = %tail.query.tenant_id,
            key_id = %principal.key_id
        );
        Ok(Response::new(tail.spawn().instrument(span).await?))
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Read)
            .await?;
        let id = ids::parse(Kind::Event, "id", &request.get_ref().id)?;
        let event = self
            .state
            .store
            .get_event(&tenant, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("event '{id}' not found")))?;
        Ok(Response::new(convert::event(&event)))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Read)
            .await?;
        let req = request.into_inner();
        let filter = Filter::parse("filters", &req.filters)?;
        let page = Page::parse(req.page_size, &req.page_token)?;
        let after = req
            .received_after
            .as_ref()
            .map(|t| time::from_timestamp("received_after", t))
            .transpose()?;
        let before = req
            .received_before
            .as_ref()
            .map(|t| time::from_timestamp("received_before", t))
            .transpose()?;
        let query = EventQuery {
            tenant_id: tenant,
            types: filter.names(),
            environment: environment_filter(&req.environment)?,
        };
        let (events, next) = self
            .state
            .store
            .list_events(&query, after, before, &page)
            .await?;
        Ok(Response::new(ListEventsResponse {
            events: events.iter().map(convert::event).collect(),
            next_page_token: next,
        }))
    }

    async fn list_event_types(
        &self,
        request: Request<ListEventTypesRequest>,
    ) -> Result<Response<ListEventTypesResponse>, Status> {
        self.state.principal(&request).await?;
        let req = request.into_inner();
        let filter = Filter::parse("filters", &req.filters)?;
        let page = Page::parse_with_default(req.page_size, &req.page_token, 100)?;
        let start = page.after_i64()?.unwrap_or(0);
        let rows: Vec<_> = catalog()
            .all()
            .iter()
            .filter(|t| i64::from(t.r#type) > start && filter.matches(&t.name))
            .take(page.size as usize + 1)
            .cloned()
            .collect();
        let (event_types, next) = page.finish(rows, |t| t.r#type.to_string());
        Ok(Response::new(ListEventTypesResponse {
            event_types,
            next_page_token: next,
        }))
    }
}

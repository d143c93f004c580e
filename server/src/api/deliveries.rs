//! `herald.v1.DeliveryService`: the delivery log and its actions.

use tonic::{Request, Response, Status};

use crate::{
    auth::Access,
    convert,
    delivery::status,
    error::{Error, Result},
    filter::Filter,
    ids::{self, Kind},
    proto::{
        self, DeleteDeliveryRequest, DeleteDeliveryResponse, DeliveryStatus, GetDeliveryRequest,
        ListAttemptsRequest, ListAttemptsResponse, ListDeliveriesRequest, ListDeliveriesResponse,
        ReplayEventsRequest, ReplayEventsResponse, RetryDeliveryRequest,
        delivery_service_server::DeliveryService,
    },
    queue::QueueItem,
    state::State,
    store::{deliveries::DeliveryQuery, entities::delivery, page::Page},
    time,
};

/// Most deliveries one `ReplayEvents` creates.
pub const MAX_REPLAY: u64 = 10_000;

pub struct DeliveryApi {
    state: State,
}

impl DeliveryApi {
    pub fn new(state: State) -> Self {
        DeliveryApi { state }
    }

    /// Authorises a manager call on the delivery named by the request field `field` and
    /// loads it (another tenant's delivery is not found).
    async fn scoped_delivery<T>(
        &self,
        request: &Request<T>,
        tenant_id: &str,
        field: &str,
        id: &str,
    ) -> Result<(String, delivery::Model)> {
        let (_, tenant) = self
            .state
            .tenant_scope(request, tenant_id, Access::Manage)
            .await?;
        let id = ids::parse(Kind::Delivery, field, id)?;
        let row = self
            .state
            .store
            .get_delivery(&tenant, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok((tenant, row))
    }

    /// Enqueues new deliveries; the reconciler covers a failure.
    async fn enqueue(&self, items: &[QueueItem]) {
        if let Err(err) = self.state.queue.push(items).await {
            tracing::warn!(error = %err, "enqueue failed; the reconciler will retry");
        }
    }
}

fn status_filter(value: i32) -> Result<Option<&'static str>> {
    match DeliveryStatus::try_from(value) {
        Ok(DeliveryStatus::Unspecified) => Ok(None),
        Ok(DeliveryStatus::Delivering) => Ok(Some(status::DELIVERING)),
        Ok(DeliveryStatus::Delivered) => Ok(Some(status::DELIVERED)),
        Ok(DeliveryStatus::Failing) => Ok(Some(status::FAILING)),
        Ok(DeliveryStatus::Failed) => Ok(Some(status::FAILED)),
        Err(_) => Err(Error::invalid("status", format!("unknown status {value}"))),
    }
}

fn optional_id(kind: Kind, field: &str, value: &str) -> Result<Option<String>> {
    if value.is_empty() {
        Ok(None)
    } else {
        Ok(Some(ids::parse(kind, field, value)?.to_string()))
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("delivery '{id}' not found"))
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let req = request.into_inner();
        let filter = Filter::parse("filters", &req.filters)?;
        let query = DeliveryQuery {
            tenant_id: tenant,
            endpoint_id: optional_id(Kind::Endpoint, "endpoint_id", &req.endpoint_id)?,
            event_id: optional_id(Kind::Event, "event_id", &req.event_id)?,
            types: filter.names(),
            status: status_filter(req.status)?,
            created_after: req
                .created_after
                .as_ref()
                .map(|t| time::from_timestamp("created_after", t))
                .transpose()?,
            created_before: req
                .created_before
                .as_ref()
                .map(|t| time::from_timestamp("created_before", t))
                .transpose()?,
        };
        let page = Page::parse(req.page_size, &req.page_token)?;
        let (rows, next) = self.state.store.list_deliveries(&query, &page).await?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.iter().map(convert::delivery).collect(),
            next_page_token: next,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<GetDeliveryRequest>,
    ) -> Result<Response<proto::Delivery>, Status> {
        let req = request.get_ref();
        let (_, row) = self
            .scoped_delivery(&request, &req.tenant_id, "id", &req.id)
            .await?;
        Ok(Response::new(convert::delivery(&row)))
    }

    async fn list_attempts(
        &self,
        request: Request<ListAttemptsRequest>,
    ) -> Result<Response<ListAttemptsResponse>, Status> {
        // A delivery of another tenant is not found, rather than an empty list.
        let (tenant, delivery) = {
            let req = request.get_ref();
            self.scoped_delivery(&request, &req.tenant_id, "delivery_id", &req.delivery_id)
                .await?
        };
        let req = request.into_inner();
        let id = delivery.id.as_str();
        let page = Page::parse(req.page_size, &req.page_token)?;
        let (rows, next) = self.state.store.list_attempts(&tenant, id, &page).await?;
        Ok(Response::new(ListAttemptsResponse {
            attempts: rows.iter().map(convert::attempt).collect(),
            next_page_token: next,
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<RetryDeliveryRequest>,
    ) -> Result<Response<proto::Delivery>, Status> {
        let req = request.get_ref();
        let (tenant, original) = self
            .scoped_delivery(&request, &req.tenant_id, "id", &req.id)
            .await?;
        let id = original.id.as_str();
        let endpoint = self
            .state
            .store
            .get_endpoint(&tenant, &original.endpoint_id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if !endpoint.enabled {
            return Err(Error::FailedPrecondition(format!(
                "endpoint '{}' is disabled ({}); enable it with UpdateEndpoint first",
                endpoint.id, endpoint.disabled_reason
            ))
            .into());
        }
        let retry = self.state.store.retry_delivery(&original).await?;
        self.enqueue(&[QueueItem::from(&retry)]).await;
        Ok(Response::new(convert::delivery(&retry)))
    }

    async fn replay_events(
        &self,
        request: Request<ReplayEventsRequest>,
    ) -> Result<Response<ReplayEventsResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let req = request.into_inner();
        let endpoint_id = ids::parse(Kind::Endpoint, "endpoint_id", &req.endpoint_id)?;
        let since = req
            .since
            .as_ref()
            .ok_or_else(|| Error::invalid("since", "is required"))
            .and_then(|t| time::from_timestamp("since", t))?;
        let until = match &req.until {
            Some(t) => time::from_timestamp("until", t)?,
            None => time::now_micros(),
        };
        if until <= since {
            return Err(Error::invalid("until", "must be after since").into());
        }
        let endpoint = self
            .state
            .store
            .get_endpoint(&tenant, endpoint_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("endpoint '{endpoint_id}' not found")))?;
        if !endpoint.enabled {
            return Err(Error::FailedPrecondition(format!(
                "endpoint '{endpoint_id}' is disabled ({}); enable it with UpdateEndpoint first",
                endpoint.disabled_reason
            ))
            .into());
        }
        let Some(filter) = Filter::stored(&endpoint.filter_list()) else {
            return Ok(Response::new(ReplayEventsResponse {
                deliveries: 0,
                truncated: false,
            }));
        };
        let items = self
            .state
            .store
            .replay(&endpoint, &filter, since, until, MAX_REPLAY)
            .await?;
        for chunk in items.chunks(1000) {
            self.enqueue(chunk).await;
        }
        Ok(Response::new(ReplayEventsResponse {
            deliveries: items.len() as u32,
            truncated: items.len() as u64 == MAX_REPLAY,
        }))
    }

    async fn delete_delivery(
        &self,
        request: Request<DeleteDeliveryRequest>,
    ) -> Result<Response<DeleteDeliveryResponse>, Status> {
        let (_, tenant) = self
            .state
            .tenant_scope(&request, &request.get_ref().tenant_id, Access::Manage)
            .await?;
        let id = ids::parse(Kind::Delivery, "id", &request.get_ref().id)?;
        if !self.state.store.delete_delivery(&tenant, id).await? {
            return Err(not_found(id).into());
        }
        Ok(Response::new(DeleteDeliveryResponse {}))
    }
}

//! Publishes, resends and test events: each stores an event and its
//! deliveries in one transaction ([`Publishing`]).

use super::*;

/// The webhook a manual delivery goes to ([`plan::manual_target`]).
pub(super) async fn manual_target(
    client: &impl deadpool_postgres::GenericClient,
    team: &str,
    webhook: &str,
) -> StoreResult<Result<Endpoint, plan::Refused>> {
    let row = client
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND team_id = $2"),
            &[&webhook, &team],
        )
        .await
        .map_err(pg_error)?;
    let found = row.as_ref().map(endpoint_from_row).transpose()?;
    Ok(plan::manual_target(found))
}

/// Stores a planned manual delivery, leased to the caller.
pub(super) async fn insert_manual_delivery(
    client: &impl deadpool_postgres::GenericClient,
    planned: PlannedDelivery<'_>,
    lease: &Lease,
) -> StoreResult<ClaimedDelivery> {
    let row = client
        .query_one(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, manual, created_at)
             VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, TRUE, $4) RETURNING seq",
            &[
                &planned.event_id.as_str(),
                &planned.endpoint.id.as_str(),
                &planned.endpoint.team_id.as_str(),
                &planned.due_ms,
                &lease.until_ms,
                &lease.node,
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(planned.claimed(DeliveryId(row.get(0))))
}

pub(super) async fn existing_event(
    tx: &impl deadpool_postgres::GenericClient,
    event: &NewEvent,
) -> StoreResult<Option<PublishOutcome>> {
    let row = tx
        .query_opt(
            "SELECT event_type, created_at, body FROM events WHERE id = $1",
            &[&event.id.as_str()],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else { return Ok(None) };
    plan::replayed(event, row.get(0), row.get(1), row.get(2)).map(Some)
}

#[async_trait]
impl Publishing for PgStore {
    async fn resend(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        event: &EventId,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<ManualOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let endpoint = match manual_target(&tx, team.as_str(), webhook.as_str()).await? {
            Ok(endpoint) => endpoint,
            Err(refused) => return Ok(refused.into()),
        };
        // Locked against retention until the delivery is committed.
        let stored = tx
            .query_opt(
                "SELECT event_type, body FROM events WHERE id = $1 AND team_id = $2 FOR KEY SHARE",
                &[&event.as_str(), &team.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let Some(stored) = stored else {
            return Ok(ManualOutcome::UnknownEvent);
        };
        let event_type = event_type_from(stored.get(0))?;
        if !event_type.is_team_webhook_type() {
            return Ok(ManualOutcome::NotAWebhookEvent);
        }
        let body = Bytes::from(stored.get::<_, Vec<u8>>(1));
        let planned = plan::manual_delivery(&endpoint, event.clone(), event_type, body, now_ms);
        let delivery = insert_manual_delivery(&tx, planned, lease).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(ManualOutcome::Created(delivery))
    }

    async fn publish_test_event(
        &self,
        event: NewEvent,
        webhook: &EndpointId,
        lease: &Lease,
    ) -> StoreResult<ManualOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let endpoint = match manual_target(&tx, &event.team_id, webhook.as_str()).await? {
            Ok(endpoint) => endpoint,
            Err(refused) => return Ok(refused.into()),
        };
        tx.execute(
            "INSERT INTO events (id, team_id, event_type, created_at, body) VALUES ($1, $2, $3, $4, $5)",
            &[
                &event.id.as_str(),
                &event.team_id,
                &event.event_type.as_str(),
                &event.created_at,
                &&event.body[..],
            ],
        )
        .await
        .map_err(pg_error)?;
        let planned = plan::manual_delivery(&endpoint, event.id, event.event_type, event.body, event.created_at);
        let delivery = insert_manual_delivery(&tx, planned, lease).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(ManualOutcome::Created(delivery))
    }

    async fn publish(&self, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
        if event.id_given {
            let client = self.client().await?;
            if let Some(outcome) = existing_event(&client, &event).await? {
                return Ok(outcome);
            }
        }
        let (done, outcome) = oneshot::channel();
        let job = batch::PublishJob {
            event,
            lease: lease.clone(),
            done,
        };
        self.publisher
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the publisher stopped".into()))?
    }

    async fn publish_bot_events(
        &self,
        bot_id: &BotId,
        events: Vec<NewBotEvent>,
        lease: Option<&Lease>,
    ) -> StoreResult<BotPublishOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let row = tx
            .query_opt(
                &format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = $1"),
                &[&bot_id.as_str()],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(BotPublishOutcome::UnknownBot);
        };
        let bot = bot_from_row(&row);
        let endpoints = bot_endpoints(&tx, bot_id.as_str()).await?;
        let planned = plan::bot_events(&bot, &endpoints, events)?;
        let insert_event = tx
            .prepare("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES ($1, $2, $3, $4, $5)")
            .await
            .map_err(pg_error)?;
        let insert_delivery = tx
            .prepare(
                "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, ordered, attempts, next_attempt_at, locked_until, locked_by, body, created_at)
                 VALUES ($1, $2, $3, 'pending', TRUE, 0, $4, $5, $6, $7, $4) RETURNING seq",
            )
            .await
            .map_err(pg_error)?;
        let (until, node) = (lease.map(|l| l.until_ms), lease.map(|l| l.node.as_str()));
        let mut stored = Vec::with_capacity(planned.len());
        let mut deliveries = Vec::new();
        for p in planned {
            tx.execute(
                &insert_event,
                &[
                    &p.event.id.as_str(),
                    &bot.team_id.as_str(),
                    &p.event.event_type.as_str(),
                    &p.event.created_at,
                    &p.data.get().as_bytes(),
                ],
            )
            .await
            .map_err(pg_error)?;
            for d in p.deliveries {
                let seq = tx
                    .query_one(
                        &insert_delivery,
                        &[
                            &d.event_id.as_str(),
                            &d.endpoint.id.as_str(),
                            &bot.team_id.as_str(),
                            &d.due_ms,
                            &until,
                            &node,
                            &&d.body[..],
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                deliveries.push(d.claimed(DeliveryId(seq.get(0))));
            }
            stored.push(p.event);
        }
        if lease.is_none() && !deliveries.is_empty() {
            tx.execute("SELECT pg_notify($1, '')", &[&WORK_CHANNEL])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(BotPublishOutcome::Created {
            events: stored,
            deliveries,
        })
    }
}

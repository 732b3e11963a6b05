//! Publishes, resends and test events: each stores an event and its
//! deliveries in one write ([`Publishing`]).

use super::*;

/// The webhook a manual delivery goes to ([`plan::manual_target`]).
pub(super) fn manual_target(c: &Connection, team: &str, webhook: &str) -> StoreResult<Result<Endpoint, plan::Refused>> {
    let found = match load_endpoint(c, team, webhook) {
        Ok(endpoint) => Some(endpoint),
        Err(StoreError::NotFound) => None,
        Err(other) => return Err(other),
    };
    Ok(plan::manual_target(found))
}

/// Stores a planned manual delivery, leased to the caller.
pub(super) fn insert_manual_delivery(
    c: &Connection,
    planned: PlannedDelivery<'_>,
    lease: &Lease,
) -> StoreResult<ClaimedDelivery> {
    c.prepare_cached(
        "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, manual, created_at)
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, 1, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            planned.event_id.as_str(),
            planned.endpoint.id.as_str(),
            planned.endpoint.team_id.as_str(),
            planned.due_ms,
            lease.until_ms,
            lease.node
        ])
    })
    .map_err(internal)?;
    Ok(planned.claimed(DeliveryId(c.last_insert_rowid())))
}

/// Stores a team event with its exact body; a taken id is a `Conflict`.
fn insert_event(c: &Connection, event: &NewEvent) -> StoreResult<()> {
    c.prepare_cached("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| {
            s.execute(params![
                event.id.as_str(),
                event.team_id,
                event.event_type.as_str(),
                event.created_at,
                &event.body[..]
            ])
        })
        .map(|_| ())
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict("event id already used".into())
            }
            other => internal(other),
        })
}

pub(super) fn publish_in(c: &Connection, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
    if event.id_given {
        let existing = c
            .prepare_cached("SELECT event_type, created_at, body FROM events WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([event.id.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
                })
                .optional()
            })
            .map_err(internal)?;
        if let Some((event_type, created_at, body)) = existing {
            return plan::replayed(&event, &event_type, created_at, &body);
        }
    }
    // Every publish runs these statements: each is parsed once per connection.
    let account: Option<String> = c
        .prepare_cached("SELECT account_id FROM teams WHERE id = ?1")
        .and_then(|mut s| s.query_row([&event.team_id], |r| r.get(0)).optional())
        .map_err(internal)?;
    match account {
        None => return Ok(PublishOutcome::UnknownTeam),
        Some(account) if account != event.account_id => return Ok(PublishOutcome::AccountMismatch),
        Some(_) => {}
    }
    insert_event(c, &event)?;

    let mut endpoints = c
        .prepare_cached(
            "SELECT id, url, secret, event_types, previous_secret, previous_secret_expires_at
             FROM endpoints WHERE team_id = ?1 AND kind = ?2 AND status = 'active'",
        )
        .map_err(internal)?;
    type Webhook = (String, String, Secret, Option<PreviousSecret>);
    let subscribed: Vec<Webhook> = endpoints
        .query_map(params![event.team_id, EndpointKind::Webhook.as_str()], |r| {
            let types = r.get_ref(3)?.as_str()?;
            if !plan::subscribes(types, event.event_type) {
                return Ok(None);
            }
            Ok(Some((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                secret_from(r.get_ref(2)?.as_str()?)?,
                previous_secret_from(r, 4)?,
            )))
        })
        .and_then(|rows| rows.filter_map(Result::transpose).collect())
        .map_err(internal)?;

    let mut insert = c
        .prepare_cached(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, attempts, next_attempt_at, locked_until, locked_by, created_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?4)",
        )
        .map_err(internal)?;
    let mut deliveries = Vec::with_capacity(subscribed.len());
    for (webhook, url, secret, previous) in subscribed {
        insert
            .execute(params![
                event.id.as_str(),
                webhook,
                event.team_id,
                event.created_at,
                lease.until_ms,
                lease.node
            ])
            .map_err(internal)?;
        deliveries.push(plan::team_delivery(
            DeliveryId(c.last_insert_rowid()),
            &event,
            webhook,
            url,
            secret,
            previous,
        ));
    }
    Ok(plan::published(&event, deliveries))
}

pub(super) fn publish_bot_in(
    c: &Connection,
    bot_id: &str,
    events: Vec<NewBotEvent>,
    lease: Option<&Lease>,
) -> StoreResult<BotPublishOutcome> {
    let bot = c
        .prepare_cached(&format!("SELECT {BOT_COLUMNS} FROM bots WHERE id = ?1"))
        .and_then(|mut s| s.query_row([bot_id], bot_from_row).optional())
        .map_err(internal)?;
    let Some(bot) = bot else {
        return Ok(BotPublishOutcome::UnknownBot);
    };
    let endpoints = bot_endpoints(c, bot_id)?;
    let planned = plan::bot_events(&bot, &endpoints, events)?;
    let mut insert_event = c
        .prepare_cached("INSERT INTO events (id, team_id, event_type, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(internal)?;
    let mut insert_delivery = c
        .prepare_cached(
            "INSERT INTO deliveries (event_id, endpoint_id, team_id, state, ordered, attempts, next_attempt_at, locked_until, locked_by, body, created_at)
             VALUES (?1, ?2, ?3, 'pending', 1, 0, ?4, ?5, ?6, ?7, ?4)",
        )
        .map_err(internal)?;
    let mut stored = Vec::with_capacity(planned.len());
    let mut deliveries = Vec::new();
    for p in planned {
        insert_event
            .execute(params![
                p.event.id.as_str(),
                bot.team_id.as_str(),
                p.event.event_type.as_str(),
                p.event.created_at,
                p.data.get().as_bytes()
            ])
            .map_err(internal)?;
        for d in p.deliveries {
            insert_delivery
                .execute(params![
                    d.event_id.as_str(),
                    d.endpoint.id.as_str(),
                    bot.team_id.as_str(),
                    d.due_ms,
                    lease.map(|l| l.until_ms),
                    lease.map(|l| l.node.as_str()),
                    &d.body[..]
                ])
                .map_err(internal)?;
            deliveries.push(d.claimed(DeliveryId(c.last_insert_rowid())));
        }
        stored.push(p.event);
    }
    Ok(BotPublishOutcome::Created {
        events: stored,
        deliveries,
    })
}

#[async_trait]
impl Publishing for SqliteStore {
    async fn publish(&self, event: NewEvent, lease: &Lease) -> StoreResult<PublishOutcome> {
        let lease = lease.clone();
        self.conns.write_shared(move |c| publish_in(c, event, &lease)).await
    }

    async fn publish_bot_events(
        &self,
        bot: &BotId,
        events: Vec<NewBotEvent>,
        lease: Option<&Lease>,
    ) -> StoreResult<BotPublishOutcome> {
        let (bot, lease) = (bot.as_str().to_owned(), lease.cloned());
        self.conns
            .write_shared(move |c| publish_bot_in(c, &bot, events, lease.as_ref()))
            .await
    }

    async fn resend(
        &self,
        team: &TeamId,
        webhook: &EndpointId,
        event: &EventId,
        lease: &Lease,
        now_ms: i64,
    ) -> StoreResult<ManualOutcome> {
        let (team, webhook, event, lease) = (
            team.as_str().to_owned(),
            webhook.as_str().to_owned(),
            event.as_str().to_owned(),
            lease.clone(),
        );
        self.conns
            .write(move |c| {
                let endpoint = match manual_target(c, &team, &webhook)? {
                    Ok(endpoint) => endpoint,
                    Err(refused) => return Ok(refused.into()),
                };
                let stored = c
                    .query_row(
                        "SELECT event_type, body FROM events WHERE id = ?1 AND team_id = ?2",
                        params![event, team],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
                    )
                    .optional()
                    .map_err(internal)?;
                let Some((event_type, body)) = stored else {
                    return Ok(ManualOutcome::UnknownEvent);
                };
                let event_type = event_type_from(&event_type).map_err(internal)?;
                if !event_type.is_team_webhook_type() {
                    return Ok(ManualOutcome::NotAWebhookEvent);
                }
                let planned = plan::manual_delivery(
                    &endpoint,
                    EventId::from_stored(event),
                    event_type,
                    Bytes::from(body),
                    now_ms,
                );
                let delivery = insert_manual_delivery(c, planned, &lease)?;
                Ok(ManualOutcome::Created(delivery))
            })
            .await
    }

    async fn publish_test_event(
        &self,
        event: NewEvent,
        webhook: &EndpointId,
        lease: &Lease,
    ) -> StoreResult<ManualOutcome> {
        let (webhook, lease) = (webhook.as_str().to_owned(), lease.clone());
        self.conns
            .write(move |c| {
                let endpoint = match manual_target(c, &event.team_id, &webhook)? {
                    Ok(endpoint) => endpoint,
                    Err(refused) => return Ok(refused.into()),
                };
                insert_event(c, &event)?;
                let planned =
                    plan::manual_delivery(&endpoint, event.id, event.event_type, event.body, event.created_at);
                let delivery = insert_manual_delivery(c, planned, &lease)?;
                Ok(ManualOutcome::Created(delivery))
            })
            .await
    }
}

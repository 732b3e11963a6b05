//! One attempt record written by itself (a record the batcher could not
//! share a statement with).

use super::*;

pub(super) async fn record_in(client: &impl deadpool_postgres::GenericClient, r: &AttemptRecord) -> StoreResult<()> {
    let (state, next_at) = delivery_move(r);
    let response = r.response.as_ref();
    let (status, headers, body) = (
        response.map(|x| i32::from(x.status)),
        response.map(|x| headers_json(&x.headers)),
        response.map(|x| x.body.as_slice()),
    );
    // One statement: move the delivery on and, if it still exists (its
    // endpoint may have been deleted meanwhile), log the attempt.
    let statement = client
        .prepare_cached(
            "WITH moved AS (
                 UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3,
                     locked_until = $4, locked_by = CASE WHEN $4::bigint IS NULL THEN NULL ELSE locked_by END
                 WHERE seq = $5 RETURNING seq, manual
             )
             INSERT INTO attempts (id, delivery_seq, team_id, endpoint_id, event_id, event_type, attempt, timestamp, status,
                 duration_ms, request_url, request_headers, response_status, response_headers, response_body, error, manual)
             SELECT $6, seq, $7, $8, $9, $10, $2, $11, $12, $13, $14, $15, $16, $17, $18, $19, manual FROM moved",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(
            &statement,
            &[
                &state,
                &(r.attempt as i32),
                &next_at,
                &r.keep_lease_until,
                &r.delivery.0,
                &r.id.as_str(),
                &r.team_id.as_str(),
                &r.endpoint_id.as_str(),
                &r.event_id.as_str(),
                &r.event_type.as_str(),
                &r.timestamp_ms,
                &r.status.as_str(),
                &r.duration_ms,
                &r.request_url,
                &request_headers_stored(&r.request_headers, r.event_id.as_str()),
                &status,
                &headers,
                &body,
                &r.error,
            ],
        )
        .await
        .map_err(pg_error)
        .map(|_| ())
}

//! The Redis call store: one key per call (`PREFIX` `call:` CALL-ID) holding a [`CallRecord`],
//! with an expiry; keyspace notifications tell every relay about the others' calls.
//!
//! Two tasks, neither of which the engine waits on:
//! - the writer owns a shadow of this relay's own records. Queued puts and deletes coalesce per
//!   call (the last one wins) and go out as one pipeline per batch. Puts run a script that
//!   refuses to replace another relay's record unless the epoch is higher
//!   ([`super::takeover::may_overwrite`]); a refused put means the call was taken over, and is
//!   reported as [`Remote::Fenced`]. Every own record is rewritten every third of the expiry
//!   (and at once when its key expires or is deleted under it), so a live call's key never
//!   lapses. When Redis fails, the relay carries on (memory and the state file), warns once,
//!   counts the failed writes and retries with backoff; the first write after a failure
//!   resynchronises every own call.
//! - the subscriber (re)subscribes to `__keyspace@DB__:PREFIXcall:*`, sends a full
//!   [`Remote::Snapshot`] after each (re)subscription, then one [`Remote::Put`] or
//!   [`Remote::Gone`] per change. It never writes a foreign call's key (no SET/DEL loops).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{AsyncCommands as _, aio::ConnectionManager};
use tokio::sync::mpsc;

use super::{
    CallStore, Loaded, Remote, StoreError,
    record::{self, CallRecord, RecordError},
};

/// Owner and epoch of the stored record: from the version 2 header (first bytes only), or from
/// a version 1 JSON record; nil for anything else.
const OWNER_LUA: &str = r"
local function owner_epoch(key)
  local head = redis.call('GETRANGE', key, 0, 127)
  if head == '' then return nil end
  local o, e = string.match(head, '^xdp%-relay%-call %d+ (%S+) (%d+)\n')
  if o then return o, tonumber(e) end
  if string.sub(head, 1, 1) == '{' then
    local ok, rec = pcall(cjson.decode, redis.call('GET', key))
    if ok and type(rec) == 'table' and type(rec.owner) == 'string' then
      return rec.owner, tonumber(rec.epoch) or 0
    end
  end
  return nil
end
";

/// SET with the ownership rule of [`super::takeover::may_overwrite`]: 0 when refused.
const PUT_SCRIPT: &str = r"
local o, e = owner_epoch(KEYS[1])
if o and o ~= ARGV[2] and e >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1";

/// Deletes only a record this relay owns (or force: an NG delete ends the call everywhere).
const DELETE_SCRIPT: &str = r"
local o = owner_epoch(KEYS[1])
if o ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]`; the database index comes from the URL.
    pub url: String,
    pub prefix: String,
    pub expires: Duration,
    pub relay_id: String,
}

/// Counters for the metrics page.
#[derive(Debug, Default)]
pub struct RedisStats {
    pub writes: AtomicU64,
    pub writes_failed: AtomicU64,
    pub records_corrupt: AtomicU64,
    pub records_version: AtomicU64,
    pub fenced: AtomicU64,
    pub resyncs: AtomicU64,
    pub connected: AtomicBool,
}

impl RedisStats {
    pub fn refused(&self, e: &RecordError) {
        match e.kind() {
            "version" => &self.records_version,
            _ => &self.records_corrupt,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

enum Op {
    Put(Box<CallRecord>),
    Delete { call_id: String, force: bool },
    Forget(String),
    Rewrite(String),
}

#[derive(Clone, Copy)]
enum Pending {
    Put,
    Delete { force: bool },
}

/// Handle of the Redis store; cheap, non-blocking calls.
pub struct RedisStore {
    cfg: RedisConfig,
    client: redis::Client,
    tx: mpsc::UnboundedSender<Op>,
    pub stats: Arc<RedisStats>,
}

fn key(prefix: &str, call_id: &str) -> String {
    format!("{prefix}call:{call_id}")
}

fn glob_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
            esc.into_iter().chain([c])
        })
        .collect()
}

impl RedisStore {
    /// Starts the writer and subscriber tasks (inside a tokio runtime). Never fails because
    /// Redis is down: connections are made lazily and retried.
    pub fn start(
        cfg: RedisConfig,
        events: mpsc::UnboundedSender<Remote>,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| StoreError::Config(format!("redis URL {:?}: {e}", cfg.url)))?;
        let stats = Arc::new(RedisStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let mgr_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        tokio::spawn(writer(cfg.clone(), conn, rx, events.clone(), stats.clone()));
        tokio::spawn(subscriber(
            cfg.clone(),
            client.clone(),
            events,
            tx.clone(),
            stats.clone(),
        ));
        Ok(RedisStore {
            cfg,
            client,
            tx,
            stats,
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }
}

impl CallStore for RedisStore {
    fn put(&mut self, rec: CallRecord) {
        let _ = self.tx.send(Op::Put(Box::new(rec)));
    }

    fn forget(&mut self, call_id: &str) {
        let _ = self.tx.send(Op::Forget(call_id.to_owned()));
    }

    fn delete(&mut self, call_id: &str, force: bool) {
        let _ = self.tx.send(Op::Delete {
            call_id: call_id.to_owned(),
            force,
        });
    }

    /// Every record in Redis, now (synchronously, bounded by a one-second timeout per step):
    /// used at start-up, before the daemon serves.
    fn load_all(&mut self) -> Result<Loaded, StoreError> {
        let mut conn = self
            .client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let io = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        conn.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        let pattern = format!("{}call:*", glob_escape(&self.cfg.prefix));
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .map_err(io)?;
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let v: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(chunk).query(&mut conn).map_err(io)?;
            values.extend(v);
        }
        Ok(decode_all(
            &self.cfg.prefix,
            keys.into_iter().zip(values),
            &self.stats,
        ))
    }
}

fn decode_all(
    prefix: &str,
    kv: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
    stats: &RedisStats,
) -> Loaded {
    let mut loaded = Loaded::default();
    for (k, v) in kv {
        let (Some(call_id), Some(v)) = (k.strip_prefix(&format!("{prefix}call:")), v) else {
            continue;
        };
        match CallRecord::decode_for(call_id, &v) {
            Ok(r) => loaded.records.push(r),
            Err(e) => {
                stats.refused(&e);
                loaded.refused.push((call_id.to_owned(), e));
            }
        }
    }
    loaded
}

async fn writer(
    cfg: RedisConfig,
    mut conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Op>,
    events: mpsc::UnboundedSender<Remote>,
    stats: Arc<RedisStats>,
) {
    let mut own: HashMap<String, CallRecord> = HashMap::new();
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut resync = false;
    let mut failing = false;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = tokio::time::Instant::now();
    let period = (cfg.expires / 3).max(Duration::from_secs(1));
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let expires = cfg.expires.as_secs().max(1);
    let put_script = format!("{OWNER_LUA}{PUT_SCRIPT}");
    let delete_script = format!("{OWNER_LUA}{DELETE_SCRIPT}");
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { break };
                let mut next = Some(op);
                while let Some(op) = next {
                    apply(op, &mut own, &mut pending);
                    next = rx.try_recv().ok();
                }
            }
            _ = refresh.tick() => pending.extend(own.keys().map(|k| (k.clone(), Pending::Put))),
            () = tokio::time::sleep_until(retry_at), if failing => {}
        }
        if pending.is_empty() || tokio::time::Instant::now() < retry_at {
            continue;
        }
        if resync {
            pending.extend(own.keys().map(|k| (k.clone(), Pending::Put)));
        }
        let batch: Vec<(String, Pending)> = pending.iter().map(|(k, p)| (k.clone(), *p)).collect();
        let mut pipe = redis::pipe();
        for (call_id, p) in &batch {
            let k = key(&cfg.prefix, call_id);
            match p {
                Pending::Put => match own.get_mut(call_id) {
                    Some(rec) => {
                        rec.updated_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        pipe.cmd("EVAL")
                            .arg(&put_script)
                            .arg(1)
                            .arg(&k)
                            .arg(rec.encode())
                            .arg(&cfg.relay_id)
                            .arg(rec.epoch)
                            .arg(expires);
                    }
                    None => {
                        pipe.cmd("PING");
                    }
                },
                Pending::Delete { force: true } => {
                    pipe.cmd("DEL").arg(&k);
                }
                Pending::Delete { force: false } => {
                    pipe.cmd("EVAL")
                        .arg(&delete_script)
                        .arg(1)
                        .arg(&k)
                        .arg(&cfg.relay_id);
                }
            }
        }
        match pipe.query_async::<Vec<redis::Value>>(&mut conn).await {
            Ok(replies) => {
                pending.clear();
                stats
                    .writes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for ((call_id, p), reply) in batch.iter().zip(replies) {
                    if matches!(p, Pending::Put)
                        && own.contains_key(call_id)
                        && matches!(reply, redis::Value::Int(0))
                    {
                        own.remove(call_id);
                        stats.fenced.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%call_id, "another relay took this call over (higher takeover epoch in Redis): demoting it to foreign");
                        let _ = events.send(Remote::Fenced(call_id.clone()));
                    }
                }
                if failing {
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(calls = own.len(), "Redis is back: every own call rewritten");
                }
                stats.connected.store(true, Ordering::Relaxed);
                failing = false;
                resync = false;
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                stats
                    .writes_failed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.connected.store(false, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, url = %cfg.url, "Redis write failed: calls go on from memory and the state file; retrying with backoff (warned once until it recovers)");
                }
                failing = true;
                resync = true;
                retry_at = tokio::time::Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn apply(op: Op, own: &mut HashMap<String, CallRecord>, pending: &mut BTreeMap<String, Pending>) {
    match op {
        Op::Put(rec) => {
            pending.insert(rec.call_id.clone(), Pending::Put);
            own.insert(rec.call_id.clone(), *rec);
        }
        Op::Delete { call_id, force } => {
            own.remove(&call_id);
            pending.insert(call_id, Pending::Delete { force });
        }
        Op::Forget(call_id) => {
            own.remove(&call_id);
            pending.remove(&call_id);
        }
        Op::Rewrite(call_id) => {
            if own.contains_key(&call_id) {
                pending.insert(call_id, Pending::Put);
            }
        }
    }
}

/// Makes sure Redis sends the keyspace events we need (K: keyspace channel; $: SET; g: DEL,
/// EXPIRE; x: expired). If CONFIG is not permitted, says what the operator must set.
async fn ensure_notifications(conn: &mut redis::aio::MultiplexedConnection) {
    let current: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await;
    let flags = current
        .ok()
        .and_then(|v| v.get(1).cloned())
        .unwrap_or_default();
    let all = flags.contains('A');
    let missing: String = "K$gx"
        .chars()
        .filter(|c| {
            // A (all classes) covers every flag but K.
            let covered = flags.contains(*c) || (all && *c != 'K');
            !covered
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let wanted = format!("{flags}{missing}");
    let set: Result<(), _> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async(conn)
        .await;
    match set {
        Ok(()) => tracing::info!(flags = %wanted, "Redis keyspace notifications enabled"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot enable Redis keyspace notifications: set notify-keyspace-events to include K$gx in redis.conf, or standby relays will not see calls until they restart")
        }
    }
}

async fn subscriber(
    cfg: RedisConfig,
    client: redis::Client,
    events: mpsc::UnboundedSender<Remote>,
    writer: mpsc::UnboundedSender<Op>,
    stats: Arc<RedisStats>,
) {
    use futures_util::StreamExt as _;
    let db = client.get_connection_info().redis_settings().db();
    let channel_prefix = format!("__keyspace@{db}__:{}call:", cfg.prefix);
    let pattern = format!("__keyspace@{db}__:{}call:*", glob_escape(&cfg.prefix));
    let conn_cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut backoff = BACKOFF_MIN;
    loop {
        let setup = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&conn_cfg)
                .await?;
            ensure_notifications(&mut conn).await;
            let mut ps = client.get_async_pubsub().await?;
            ps.psubscribe(&pattern).await?;
            // Only after subscribing: nothing written in between is missed.
            let keys: Vec<String> = conn
                .keys(format!("{}call:*", glob_escape(&cfg.prefix)))
                .await?;
            let mut values: Vec<Option<Vec<u8>>> = Vec::new();
            for chunk in keys.chunks(500) {
                values.extend(conn.mget::<_, Vec<Option<Vec<u8>>>>(chunk).await?);
            }
            Ok::<_, redis::RedisError>((conn, ps, keys.into_iter().zip(values).collect::<Vec<_>>()))
        };
        let (mut conn, mut ps, kv) = match setup.await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "Redis subscription");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let loaded = decode_all(&cfg.prefix, kv, &stats);
        for (call_id, e) in &loaded.refused {
            tracing::warn!(%call_id, error = %e, "skipping a Redis call record");
        }
        if events.send(Remote::Snapshot(loaded.records)).is_err() {
            return;
        }
        let mut stream = ps.on_message();
        while let Some(msg) = stream.next().await {
            let Some(call_id) = msg.get_channel_name().strip_prefix(&channel_prefix) else {
                continue;
            };
            let call_id = call_id.to_owned();
            let event: String = msg.get_payload().unwrap_or_default();
            let sent = match event.as_str() {
                "set" => {
                    let k = key(&cfg.prefix, &call_id);
                    // Our own writes come back too: the header says so without the body.
                    let head: Result<Vec<u8>, _> =
                        conn.getrange(&k, 0, record::HEAD_MAX as isize - 1).await;
                    if head
                        .as_deref()
                        .ok()
                        .and_then(CallRecord::head)
                        .is_some_and(|(owner, _)| owner == cfg.relay_id)
                    {
                        continue;
                    }
                    let v: Result<Option<Vec<u8>>, _> = conn.get(k).await;
                    match v {
                        Ok(Some(bytes)) => match CallRecord::decode_for(&call_id, &bytes) {
                            Ok(rec) if rec.owner == cfg.relay_id => Ok(()),
                            Ok(rec) => events.send(Remote::Put(Box::new(rec))).map_err(drop),
                            Err(e) => {
                                stats.refused(&e);
                                tracing::warn!(%call_id, error = %e, "skipping a Redis call record");
                                Ok(())
                            }
                        },
                        Ok(None) => Ok(()),
                        Err(_) => break,
                    }
                }
                "del" | "expired" => {
                    let _ = writer.send(Op::Rewrite(call_id.clone()));
                    events.send(Remote::Gone(call_id)).map_err(drop)
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
        tracing::debug!("Redis subscription lost; resubscribing");
    }
}

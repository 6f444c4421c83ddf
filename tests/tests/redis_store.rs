//! The Redis call store against a real redis-server on a test namespace's loopback: keyspace
//! notifications between two relays, ownership fencing, expiry refresh, Redis dying and coming
//! back empty, corrupt and previous-version records.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use relay_core::session::{Config, OfferOptions, Sessions};
use relay_ctl::state::{
    CallStore as _, Remote,
    record::CallRecord,
    redis::{RedisConfig, RedisStore},
    takeover,
};
use relay_tests::{netns::Netns, privileged, redis::Redis, unique_prefix};
use tokio::sync::mpsc;

fn record(owner: &str, call_id: &str, epoch: u64) -> CallRecord {
    let mut s = Sessions::new(Config {
        interfaces: vec!["pub/10.0.0.1".parse().unwrap()],
        port_min: 30000,
        port_max: 30100,
    })
    .unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    s.offer(call_id, "ft", sdp, &OfferOptions::default())
        .unwrap();
    CallRecord::new(call_id, owner, epoch, 1, 1, s.export_call(call_id).unwrap())
}

fn cfg(r: &Redis, id: &str, expires: u64) -> RedisConfig {
    RedisConfig {
        url: r.url(3),
        prefix: "t:".into(),
        expires: Duration::from_secs(expires),
        relay_id: id.into(),
    }
}

/// Waits (bounded) for an event matching `want`, skipping others.
async fn expect(
    rx: &mut mpsc::UnboundedReceiver<Remote>,
    what: &str,
    want: impl Fn(&Remote) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if want(&ev) => return,
            Ok(Some(_)) => {}
            _ => panic!("no {what} within 5 s"),
        }
    }
}

/// Runs the future `body` makes on a current-thread runtime in `ns` (where Redis listens).
fn block_on_in<F: Future<Output = ()>>(ns: &Netns, body: impl FnOnce() -> F + Send + 'static) {
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    })
    .unwrap();
}

/// Waits (bounded, 10 s) until the store has counted a failed write.
async fn wait_failed_write(store: &RedisStore) {
    let t0 = Instant::now();
    while store.stats.writes_failed.load(Ordering::Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no failed write counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection to db 3 on 127.0.0.1:`port`, made from the calling (namespace) thread.
fn db3(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/3")).unwrap();
    c.get_connection_with_timeout(Duration::from_secs(1))
        .unwrap()
}

fn setup(test: &str) -> Option<(Netns, Redis)> {
    if !privileged(test) || !relay_tests::redis::available(test) {
        return None;
    }
    let ns = Netns::new(&format!("{}rd", unique_prefix())).unwrap();
    // A port of our own on a namespace's loopback: nothing else listens there.
    let redis = Redis::start(&ns, 6390).unwrap();
    Some((ns, redis))
}

#[test]
fn two_relays_see_each_others_calls_and_never_overwrite_them() {
    let Some((ns, redis)) = setup("two_relays_see_each_others_calls_and_never_overwrite_them")
    else {
        return;
    };
    let (ca, cb) = (cfg(&redis, "a", 60), cfg(&redis, "b", 60));
    block_on_in(&ns, move || async move {
        let (ta, mut ra) = mpsc::unbounded_channel();
        let (tb, mut rb) = mpsc::unbounded_channel();
        let mut a = RedisStore::start(ca, ta).unwrap();
        let mut b = RedisStore::start(cb, tb).unwrap();
        expect(&mut ra, "snapshot on a", |e| {
            matches!(e, Remote::Snapshot(_))
        })
        .await;
        expect(&mut rb, "snapshot on b", |e| {
            matches!(e, Remote::Snapshot(_))
        })
        .await;
        a.put(record("a", "c1", 0));
        expect(
            &mut rb,
            "c1 on b",
            |e| matches!(e, Remote::Put(r) if r.call_id == "c1" && r.owner == "a"),
        )
        .await;
        // b takes c1 over; a's next write of its old view is refused and a is told.
        b.put(takeover::taken_over(&record("a", "c1", 0), "b", 2));
        expect(
            &mut ra,
            "c1 taken by b",
            |e| matches!(e, Remote::Put(r) if r.owner == "b" && r.epoch == 1),
        )
        .await;
        a.put(record("a", "c1", 0));
        expect(
            &mut ra,
            "fencing of a",
            |e| matches!(e, Remote::Fenced(c) if c == "c1"),
        )
        .await;
        // a's own (non-forced) delete leaves b's record alone.
        a.delete("c1", false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let l = b.load_all().unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!((l.records[0].owner.as_str(), l.records[0].epoch), ("b", 1));
        // An NG delete (forced) removes the key everywhere, and a is told.
        b.delete("c1", true);
        expect(
            &mut ra,
            "c1 gone",
            |e| matches!(e, Remote::Gone(c) if c == "c1"),
        )
        .await;
        assert!(a.load_all().unwrap().records.is_empty());
    });
}

#[test]
fn redis_down_and_back_loses_no_call_and_expiring_keys_are_rewritten() {
    let Some((ns, mut redis)) =
        setup("redis_down_and_back_loses_no_call_and_expiring_keys_are_rewritten")
    else {
        return;
    };
    let ca = cfg(&redis, "a", 3);
    block_on_in(&ns, move || async move {
        let (ta, _ra) = mpsc::unbounded_channel();
        let mut a = RedisStore::start(ca, ta).unwrap();
        for i in 0..10 {
            a.put(record("a", &format!("c{i}"), 0));
        }
        wait_keys(redis.port, 10, "first writes").await;
        // Keys expire after 3 s; the writer rewrites them every second.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(
            count_keys(redis.port),
            10,
            "live calls' keys outlive their expiry"
        );
        // A live call's key deleted under it (by hand, or expired) is written again.
        del_key(redis.port, "t:call:c3");
        wait_keys(redis.port, 10, "rewrite of a key deleted under a live call").await;

        redis.kill();
        for i in 10..15 {
            a.put(record("a", &format!("c{i}"), 0));
        }
        a.delete("c0", false);
        wait_failed_write(&a).await;
        assert!(a.load_all().is_err());

        // Back, empty (no persistence): every own call is rewritten, the deleted one not.
        redis.restart().unwrap();
        wait_keys(redis.port, 14, "resynchronisation after Redis came back").await;
        assert!(a.stats.resyncs.load(Ordering::Relaxed) >= 1);
    });
}

/// Waits (bounded, 15 s) until db 3 holds `n` call keys.
async fn wait_keys(port: u16, n: usize, what: &str) {
    let t0 = Instant::now();
    while count_keys(port) != n {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{what}: {} keys, not {n}",
            count_keys(port)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn del_key(port: u16, key: &str) {
    let mut conn = db3(port);
    redis::cmd("DEL").arg(key).query::<()>(&mut conn).unwrap();
}

#[test]
fn redis_down_at_start_then_up() {
    let Some((ns, mut redis)) = setup("redis_down_at_start_then_up") else {
        return;
    };
    redis.kill();
    let ca = cfg(&redis, "a", 60);
    block_on_in(&ns, move || async move {
        let (ta, _ra) = mpsc::unbounded_channel();
        // Starting never fails for want of Redis; reads say it is unavailable.
        let mut a = RedisStore::start(ca, ta).unwrap();
        assert!(a.load_all().is_err());
        for i in 0..3 {
            a.put(record("a", &format!("c{i}"), 0));
        }
        wait_failed_write(&a).await;
        redis.restart().unwrap();
        wait_keys(redis.port, 3, "own calls written once Redis is up").await;
    });
}

/// Keys in db 3 on 127.0.0.1:`port`, read in the calling (namespace) thread.
fn count_keys(port: u16) -> usize {
    let mut conn = db3(port);
    let keys: Vec<String> = redis::cmd("KEYS").arg("t:call:*").query(&mut conn).unwrap();
    keys.len()
}

#[test]
fn corrupt_and_previous_version_records() {
    let Some((ns, redis)) = setup("corrupt_and_previous_version_records") else {
        return;
    };
    let v1 = String::from_utf8(record("a", "old", 0).encode_v1()).unwrap();
    // A record from a newer relay: version 9 in its header.
    let future = String::from_utf8(record("a", "new", 0).encode())
        .unwrap()
        .replacen("xdp-relay-call 2 ", "xdp-relay-call 9 ", 1);
    for (k, v) in [
        ("t:call:old", v1.as_str()),
        ("t:call:new", future.as_str()),
        ("t:call:junk", "{not json"),
    ] {
        let port = redis.port;
        let (k, v) = (k.to_owned(), v.to_owned());
        ns.run(move || {
            let mut conn = db3(port);
            redis::cmd("SET")
                .arg(k)
                .arg(v)
                .query::<()>(&mut conn)
                .unwrap();
        })
        .unwrap();
    }
    let ca = cfg(&redis, "b", 60);
    block_on_in(&ns, move || async move {
        let (t, _r) = mpsc::unbounded_channel();
        let mut b = RedisStore::start(ca, t).unwrap();
        let l = b.load_all().unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!(
            (l.records[0].call_id.as_str(), l.records[0].epoch),
            ("old", 0)
        );
        let mut kinds: Vec<_> = l
            .refused
            .iter()
            .map(|(k, e)| (k.as_str(), e.kind()))
            .collect();
        kinds.sort();
        assert_eq!(kinds, vec![("junk", "corrupt"), ("new", "version")]);
        assert_eq!(b.stats.records_version.load(Ordering::Relaxed), 1);
    });
}

//! Parse + verify + build response per Binding request, through the ICE-lite agent.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay_core::creds::Credentials;
use relay_core::ice::{Component, IceLiteAgent};
use relay_core::stun::{self, Class, IntegrityKey, MessageBuilder, TransactionId};

fn binding_request(c: &mut Criterion) {
    let local = Credentials::random();
    let remote = Credentials::random();
    let req = MessageBuilder::new(Class::Request, stun::BINDING, TransactionId([9; 12]))
        .username(&format!("{}:{}", local.ufrag, remote.ufrag))
        .priority(1_862_270_975)
        .ice_controlling(0x1234_5678_9abc_def0)
        .use_candidate()
        .integrity(&IntegrityKey::new(local.pwd.as_bytes()))
        .fingerprint()
        .build()
        .expect("small message");
    let mut agent = IceLiteAgent::new(local, 1);
    agent.set_remote_credentials(remote);
    let (l, s) = (
        "10.0.0.1:4000".parse().unwrap(),
        "192.0.2.7:5000".parse().unwrap(),
    );
    let now = Instant::now();
    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    g.bench_function("binding_request_parse_verify_respond", |b| {
        b.iter(|| {
            let t = agent.handle_stun(now, Component::Rtp, l, s, black_box(&req));
            black_box(t.expect("valid").expect("reply"))
        })
    });
    g.finish();
}

criterion_group!(benches, binding_request);
criterion_main!(benches);

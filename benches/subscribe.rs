//! Subscription fan-out (issue #17): device property changes per second delivered to 1,
//! 10 and 100 subscribers.
//!
//! One iteration writes 1,000 property changes into the registry (distinct values, so
//! none is a re-report), has the hub publish them, and drains every subscriber: the
//! figure includes the registry write, the fan-out (a clone of each change per
//! subscriber) and the consumers' receive. Throughput is in delivered events.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use twinhub::hub::{Hub, HubConfig, SubscribeOptions};
use twinhub::registry::Registry;
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Timestamp};

const CHANGES: usize = 1000;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe_fan_out");
    for subscribers in [1usize, 10, 100] {
        let mut registry = Registry::new();
        for i in 0..100 {
            registry
                .create(Twin::new(DeviceId::new(&format!("d{i}")).unwrap()))
                .unwrap();
        }
        let hub = Hub::with_transport(
            MemoryTransport::new(MemoryConfig::default()),
            registry,
            HubConfig::default(),
        );
        let subs: Vec<_> = (0..subscribers)
            .map(|_| {
                hub.subscribe(SubscribeOptions {
                    capacity: 2 * CHANGES,
                    ..SubscribeOptions::twins_only()
                })
                .unwrap()
            })
            .collect();
        let mut round = 0i64;
        group.throughput(Throughput::Elements((CHANGES * subscribers) as u64));
        group.bench_with_input(
            BenchmarkId::new("property_changes", subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    round += 1;
                    {
                        let mut reg = hub.registry().write();
                        for i in 0..CHANGES {
                            let id = format!("d{}", i % 100);
                            let value = round * CHANGES as i64 + i as i64;
                            reg.report_device_property(
                                &id,
                                "BatteryLevel",
                                (value % 101).into(),
                                Timestamp::from_millis(value as u64),
                            )
                            .unwrap();
                        }
                    }
                    // A service write publishes everything pending before it returns.
                    hub.add_tags("d0", &["bench"], None).unwrap();
                    let mut delivered = 0;
                    for s in &subs {
                        while s.try_recv().is_ok() {
                            delivered += 1;
                        }
                    }
                    delivered
                })
            },
        );
        hub.stop();
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);

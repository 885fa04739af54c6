//! PSK keys and sealing keys are overwritten when they are dropped: no block of memory
//! handed back to the allocator still holds one. In a test binary of its own: its
//! allocator looks into every block freed while a key's bytes are being watched for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use twinhub::store::{SealingKey, Store, StoreConfig};
use twinhub::twin::{Authentication, PskKey, Twin};
use twinhub::{DeviceId, Registry};

/// The bytes watched for (the first 16 of a key), while `WATCHING` is set.
static PATTERN: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static WATCHING: AtomicBool = AtomicBool::new(false);
/// Freed blocks that held the pattern.
static FOUND: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, looking into each block it frees for the watched bytes.
struct Watching;

fn pattern() -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&PATTERN[0].load(Ordering::SeqCst).to_le_bytes());
    p[8..].copy_from_slice(&PATTERN[1].load(Ordering::SeqCst).to_le_bytes());
    p
}

// SAFETY is the system allocator's: each call is passed through unchanged; `dealloc`
// reads the block it is given (valid for `layout.size()` bytes) before freeing it.
// `realloc` is the trait's default (allocate, copy, `dealloc` the old block).
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::SeqCst) && layout.size() >= 16 {
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let p = pattern();
            if block.windows(16).any(|w| w == p) {
                FOUND.fetch_add(1, Ordering::SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// One scenario watches at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scenario` watching for `key` (its first 16 bytes); returns the freed blocks
/// that held them.
fn freed_holding(key: &[u8], scenario: impl FnOnce()) -> usize {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    PATTERN[0].store(
        usize::from_le_bytes(key[..8].try_into().unwrap()),
        Ordering::SeqCst,
    );
    PATTERN[1].store(
        usize::from_le_bytes(key[8..16].try_into().unwrap()),
        Ordering::SeqCst,
    );
    FOUND.store(0, Ordering::SeqCst);
    WATCHING.store(true, Ordering::SeqCst);
    scenario();
    WATCHING.store(false, Ordering::SeqCst);
    FOUND.load(Ordering::SeqCst)
}

/// A key no other allocation of the test holds by chance.
fn key_bytes(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(37) ^ 0xa5)
}

fn keyed(id: &str, key: &[u8]) -> Twin {
    let mut twin = Twin::new(DeviceId::new(id).unwrap());
    twin.authentication = Authentication {
        psk_identity: Some(format!("{id}-identity")),
        psk_key: Some(PskKey::new(key.to_vec())),
    };
    twin
}

#[test]
fn a_dropped_psk_key_leaves_no_copy_in_freed_memory() {
    let key = key_bytes(1);
    let found = freed_holding(&key, || {
        let k = PskKey::new(key[..16].to_vec());
        assert_eq!(k.expose(), &key[..16]);
        let copy = k.clone();
        drop(k);
        drop(copy);
        // Held by a twin in a registry, and by the twin views the registry hands out.
        let mut reg = Registry::new();
        reg.create(keyed("d", &key[..16])).unwrap();
        let twin = reg.get("d").unwrap().to_twin();
        assert!(twin.authentication.psk_key.is_some());
        drop(twin);
        drop(reg);
    });
    assert_eq!(found, 0, "freed blocks still holding the PSK key");
}

#[test]
fn dropped_sealing_keys_leave_no_copy_in_freed_memory() {
    let sealing = key_bytes(2);
    let found = freed_holding(&sealing, || {
        let keys = vec![SealingKey::new(sealing), SealingKey::new(key_bytes(3))];
        drop(keys);
    });
    assert_eq!(found, 0, "freed blocks still holding the sealing key");
}

/// A store that seals: the sealing key (kept by the store as a cipher) and the PSK
/// keys it opens from disk leave nothing behind once the store and registry are
/// dropped.
#[test]
fn a_sealing_store_leaves_no_key_in_freed_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sealing = key_bytes(4);
    let psk = key_bytes(5);
    let config = || {
        let mut config = StoreConfig::default();
        config.sealing_key = Some(SealingKey::new(sealing));
        config
    };
    {
        let (mut store, mut reg) = Store::open(dir.path(), config()).unwrap();
        reg.create(keyed("d", &psk[..16])).unwrap();
        store.commit(&reg).unwrap();
    }
    for watched in [&sealing[..16], &psk[..16]] {
        let found = freed_holding(watched, || {
            let (store, reg) = Store::open(dir.path(), config()).unwrap();
            let twin = reg.get("d").unwrap().to_twin();
            assert_eq!(
                twin.authentication.psk_key.as_ref().map(PskKey::expose),
                Some(&psk[..16])
            );
            drop(twin);
            // On the heap, so that freeing the store's own memory is looked into too.
            drop(Box::new(store));
            drop(reg);
        });
        assert_eq!(found, 0, "freed blocks still holding a key");
    }
}

/// Review 55: a key read from hex digits leaves no copy behind. `hex::decode` grows its
/// vector as it fills (8, 16, 32 bytes), and the 16-byte buffer it frees on the way
/// holds the key's first 16 bytes; `SealingKey::from_hex` then also freed the decoded
/// vector itself, unzeroed, in `try_into`.
#[test]
fn a_sealing_key_read_from_hex_leaves_no_copy_in_freed_memory() {
    let sealing = key_bytes(6);
    let text = hex::encode(sealing);
    let found = freed_holding(&sealing, || {
        let key = SealingKey::from_hex(&text).unwrap();
        drop(key);
    });
    assert_eq!(found, 0, "freed blocks still holding the sealing key");
    assert!(SealingKey::from_hex(&text[..62]).is_none());
    assert!(SealingKey::from_hex(&format!("{}zz", &text[..62])).is_none());
}

/// Review 55: the same for a 32-byte PSK key given in hex (`key_from_hex`).
#[cfg(feature = "dtls")]
#[test]
fn a_psk_key_read_from_hex_leaves_no_copy_in_freed_memory() {
    let psk = key_bytes(7);
    let text = hex::encode(psk);
    let found = freed_holding(&psk, || {
        let key = twinhub::dtls::key_from_hex(&text).unwrap();
        assert_eq!(key.expose(), &psk[..]);
        drop(key);
    });
    assert_eq!(found, 0, "freed blocks still holding the PSK key");
}

/// Review 55: a store without a sealing key keeps the PSK key as hex in the twin's head;
/// reopening it decoded a 32-byte key through `hex::decode`, as above.
#[test]
fn a_plain_store_reopened_leaves_no_raw_key_in_freed_memory() {
    let dir = tempfile::tempdir().unwrap();
    let psk = key_bytes(8);
    {
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.create(keyed("d", &psk)).unwrap();
        store.commit(&reg).unwrap();
    }
    let found = freed_holding(&psk, || {
        let (store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let twin = reg.get("d").unwrap().to_twin();
        assert_eq!(
            twin.authentication.psk_key.as_ref().map(PskKey::expose),
            Some(&psk[..])
        );
        drop(twin);
        drop(Box::new(store));
        drop(reg);
    });
    assert_eq!(found, 0, "freed blocks still holding the PSK key");
}

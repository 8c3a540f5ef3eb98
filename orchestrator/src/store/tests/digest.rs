//! The projection digest, which compares a rebuilt projection with a live one,
//! covers every column family a rebuild must reproduce: a change to any of them
//! changes it; only stored offsets and snapshots (a batching-dependent cache)
//! are left out.

use crate::store::{keys, Store};

fn put(store: &Store, cf: &str, key: &[u8]) {
    store.db.put_cf(store.cf(cf), key, b"v").unwrap();
}

#[test]
fn every_reproducible_column_family_is_in_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut last = store.digest().unwrap();
    assert_eq!(last.0, 0, "an empty store digests no record");
    for &cf in keys::ALL_CFS {
        put(&store, cf, format!("digest-test/{cf}").as_bytes());
        let now = store.digest().unwrap();
        if cf == keys::CF_SNAPSHOTS {
            assert_eq!(now, last, "snapshots are left out");
        } else if cf == keys::CF_META {
            assert_eq!(now, last, "offsets and other meta keys are left out");
        } else {
            assert_ne!(now.1, last.1, "{cf} is not in the digest");
            assert_eq!(now.0, last.0 + 1, "{cf} is not counted");
        }
        last = now;
    }
    put(&store, keys::CF_META, &keys::offset("weft.t.events", 0));
    assert_eq!(
        store.digest().unwrap(),
        last,
        "offsets differ after a rebuild"
    );
    put(&store, keys::CF_META, &keys::analytics("weft.t.events", 0));
    assert_ne!(store.digest().unwrap(), last, "analytics are in the digest");
}

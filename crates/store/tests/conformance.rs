//! Runs the conformance suite against both backends, through the public macro exactly
//! as an external backend crate would.

mod memory {
    use meshplane_store::MemoryStore;

    meshplane_store::store_conformance_tests!(|options| (MemoryStore::with_options(options), ()));
}

mod sqlite {
    use meshplane_store::SqliteStore;

    meshplane_store::store_conformance_tests!(|options| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_with(&dir.path().join("meshplane.db"), options)
            .expect("open sqlite store");
        (store, dir)
    });
}

-- pg_platform finalize: who may call what. The schema is closed to PUBLIC (bootstrap);
-- inside it, functions are granted per group role instead of the PUBLIC default.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA platform FROM PUBLIC;

GRANT EXECUTE ON FUNCTION platform.apply_rbac(text) TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.create_payments_schema(text, date, integer) TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.generate_payments(text, integer, integer, bigint, bigint, timestamptz, integer, float8)
    TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.generate_location_rows(bigint, bigint),
                          platform.generate_customer_rows(bigint, bigint, bigint, timestamptz),
                          platform.generate_billing_address_rows(bigint, bigint, bigint),
                          platform.generate_merchant_rows(bigint, bigint, timestamptz),
                          platform.generate_payment_method_rows(bigint, bigint, timestamptz),
                          platform.generate_device_rows(bigint, bigint, timestamptz),
                          platform.generate_transaction_rows(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz, integer, float8)
    TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.worker_status() TO platform_admin, platform_developer, platform_readonly;
GRANT EXECUTE ON FUNCTION platform.create_cdc_slot(text, boolean) TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.partition_by_time(regclass, text, interval, integer, timestamptz, interval, text, boolean, text),
                          platform.run_maintenance(regclass),
                          platform.set_retention(regclass, interval, text),
                          platform.set_premake(regclass, integer),
                          platform.undo_partitioning(regclass)
    TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.create_key(text), platform.rotate_key(text), platform.forget_subject(text, text)
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.rewrap_keys() TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.encrypt(text, text, text), platform.encrypt(bytea, text, text),
                          platform.encrypt_for_subject(text, text, text, text), platform.encrypt_for_subject(bytea, text, text, text),
                          platform.blind_index(text, text)
    TO platform_admin, platform_developer, platform_pii_reader;
GRANT EXECUTE ON FUNCTION platform.decrypt(bytea, text), platform.decrypt_bytea(bytea, text) TO platform_pii_reader;
GRANT EXECUTE ON FUNCTION platform.is_current_version(bytea), platform.reencrypt_value(bytea, text) TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.reveal(bytea, text, text)
    TO platform_admin, platform_developer, platform_readonly, platform_auditor, platform_pii_reader;
GRANT EXECUTE ON FUNCTION platform.protect_column_prepare(regclass, text, text, text, text, boolean, text),
                          platform.protect_column_batch(integer, bigint),
                          platform.protect_column_finish(integer),
                          platform.protected_row_context(regclass, text),
                          platform.reset_pii_access()
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.reveal_column(bytea, integer, text), platform.protected_blind_index(text, integer)
    TO platform_admin, platform_developer, platform_readonly, platform_auditor, platform_pii_reader;
GRANT EXECUTE ON FUNCTION platform.protected_rebind(bytea, integer, text, text, text)
    TO platform_admin, platform_developer, platform_pii_reader;
GRANT EXECUTE ON FUNCTION platform.pii_access_counts() TO platform_admin, platform_auditor;
GRANT EXECUTE ON FUNCTION platform.audit_table(regclass, text[], boolean), platform.unaudit_table(regclass),
                          platform.audit_trigger(), platform.seal_audit()
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.verify_audit(timestamptz), platform.audit_settings(),
                          platform.audit_statement_context(bigint, timestamptz, text, integer) TO platform_admin, platform_auditor;
-- Both read the event trigger's own command list: called anywhere else they fail, so they
-- cannot forge audit rows.
GRANT EXECUTE ON FUNCTION platform.record_audit_ddl(), platform.record_audit_drop() TO PUBLIC;
GRANT EXECUTE ON FUNCTION platform.fraud_score(text, numeric, timestamptz, text, text, float8, float8, jsonb),
                          platform.fraud_score_batch(text),
                          platform.fraud_import_model(text, text, text, text[], float8, float8),
                          platform.fraud_train(text, text, text, text, jsonb),
                          platform.fraud_evaluate(text, integer, text, text),
                          platform.fraud_backtest(text, integer, text)
    TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.fraud_deploy(text, integer, text), platform.fraud_rollback(text, text),
                          platform.fraud_undeploy(text, text), platform.fraud_retire(text, integer),
                          platform.fraud_rebuild_profiles(text)
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.fraud_features(text, text) TO platform_admin, platform_developer;
GRANT EXECUTE ON FUNCTION platform.fraud_set_rule(text, text, text, integer, boolean), platform.fraud_drop_rule(text),
                          platform.score_payments(regclass, jsonb), platform.unscore_payments(regclass),
                          platform.fraud_score_trigger(), platform.fraud_review_trigger()
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.fraud_drift(text, integer, text) TO platform_admin, platform_developer, platform_auditor;
GRANT EXECUTE ON FUNCTION platform.fraud_stats() TO platform_admin, platform_developer, platform_auditor;
GRANT EXECUTE ON FUNCTION platform.fraud_reset_stats() TO platform_admin;
-- Lake sinks write server files and own replication slots: the caller also needs
-- pg_write_server_files (checked) and REPLICATION (checked by PostgreSQL).
GRANT EXECUTE ON FUNCTION platform.create_lake_sink(text, text, text, boolean, boolean), platform.drop_lake_sink(text),
                          platform.lake_sync(text), platform.lake_backfill(text, regclass)
    TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.lake_compact(text, text), platform.lake_merge(text, date, boolean) TO platform_admin;
GRANT EXECUTE ON FUNCTION platform.lake_read_sql(text, text, text), platform.lake_star_schema_sql(text, text) TO platform_admin, platform_developer, platform_readonly;

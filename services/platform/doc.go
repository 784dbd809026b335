// Package platform is the root of the plumbing shared by Understudy's services: Kafka client
// configuration (kafka), topic administration (topics), the consume loop, its shutdown drain
// and the consume-transform-produce transaction tail (consume), dead-letter publishing (deadletter), the operational HTTP server (server),
// the shared service configuration and its error classes (svc), flag/env configuration
// (flagenv) and the body of every main (launch), log-once-per-change (logchange), jittered
// backoff (backoff), readiness progress tracking (progress), the experiments file
// (experiment), prediction extraction (predict), sampling (sample), the schema registry
// (registry), upstream HTTP clients (upstream), Postgres migrations and error classes
// (migrate, pgerr), a throwaway Postgres for tests and the demo (pgrun), and what the
// services' tests share (servicetest: the leak check, an in-process broker, Validate tables;
// imported by tests only). It holds no
// shadow-deployment decision logic: that lives in each service.
package platform

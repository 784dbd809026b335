// Package platform is the root of the plumbing shared by Understudy's services: Kafka client
// configuration (kafka), topic administration (topics), the consume loop and its shutdown
// drain (consume), dead-letter publishing (deadletter), the operational HTTP server (server),
// the shared service configuration and its error classes (svc), flag/env configuration
// (flagenv) and the body of every main (launch), log-once-per-change (logchange), jittered
// backoff (backoff), readiness progress tracking (progress), the experiments file
// (experiment), prediction extraction (predict), sampling (sample), the schema registry
// (registry), upstream HTTP clients (upstream), Postgres migrations and error classes
// (migrate, pgerr) and a throwaway Postgres for tests and the demo (pgrun). It holds no
// shadow-deployment decision logic: that lives in each service.
package platform

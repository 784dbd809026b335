// Package platform is the root of the plumbing shared by Understudy's services: Kafka client
// configuration, topic administration, dead-letter publishing, the operational HTTP server,
// flag/env configuration, Postgres migrations and a throwaway Postgres for tests and the demo.
// It holds no shadow-deployment logic: that lives in each service.
package platform

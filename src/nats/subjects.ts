/**
 * Every NATS subject of the system, in one place. Each entry says the pattern, the
 * payload, who publishes and who subscribes. Payload schemas live in payloads.ts and
 * are validated on receipt; nothing from the wire is trusted.
 */
/**
 * Builds the subjects of one deployment. `pre` (NATS_SUBJECT_PREFIX, e.g. "staging.")
 * lets several deployments — or test runs — share one NATS server without hearing each
 * other. Production default: no prefix.
 */
export function makeSubjects(pre = '') {
  return {
    // ---- Delivery pipeline -------------------------------------------------------

    /**
     * `notify.enqueue` — request/reply (service endpoint `enqueue`, queue group: any one
     * worker answers). Payload: EnqueueRequest JSON. Reply: EnqueueReply, sent only after
     * the row is committed. Publishers: bot instances, the ads gateway, the CLI.
     */
    enqueue: `${pre}notify.enqueue`,

    /**
     * `notify.wake.<shard>` — event, published after an enqueue commit so the owner of the
     * shard claims at once instead of at its next poll. Payload: WakeEvent.
     * Subscribers: the worker(s) owning the shard.
     */
    wake: (shard: number): string => `${pre}notify.wake.${shard}`,
    wakeAll: `${pre}notify.wake.*`,

    /**
     * `notify.outcome.sent` / `notify.outcome.failed` — event per finished notification.
     * Payload: OutcomeEvent. Publisher: the outcome writer after its batch committed.
     * Subscribers: anyone (`nats sub 'notify.outcome.>'`).
     */
    outcome: (status: 'sent' | 'failed'): string => `${pre}notify.outcome.${status}`,
    outcomeAll: `${pre}notify.outcome.>`,

    /**
     * `notify.recipient.changed` — event: a recipient was marked unreachable or cleared.
     * Payload: RecipientChanged. Every worker updates its recipient cache.
     */
    recipientChanged: `${pre}notify.recipient.changed`,

    /**
     * `notify.status.<instance>` — request (service endpoint `status`): this worker's
     * shards, queue depths, in-flight, counters and rate-limit waits. Empty payload.
     */
    status: (instance: string): string => `${pre}notify.status.${instance}`,

    /**
     * `notify.status.all` — request to every worker at once (use requestMany / `nats req
     * --replies 0`); each answers like `notify.status.<instance>`.
     */
    statusAll: `${pre}notify.status.all`,

    /**
     * `notify.cluster.status` — request (service endpoint `cluster`, any one worker answers):
     * shard → owner map, members, each process's queue depth and budget share, the
     * coordinator and recent takeovers.
     */
    clusterStatus: `${pre}notify.cluster.status`,

    /**
     * `notify.budget.grant.<holder>` — request from the budget coordinator to one process:
     * BudgetGrant (its share of the bot's global limit per window, valid until expires_at).
     * Reply `{ ok, share, issued_at }` once applied.
     */
    budgetGrant: (holder: string): string => `${pre}notify.budget.grant.${holder.replace(/[^-\w]/g, '_')}`,

    /** `notify.budget.demand` — event from every worker 4×/s: BudgetDemand. Subscriber: the coordinator. */
    budgetDemand: `${pre}notify.budget.demand`,

    /** `notify.budget.flood` — event: BudgetFlood; every worker pauses sending until `until`. */
    budgetFlood: `${pre}notify.budget.flood`,

    /** Service name every worker registers (`nats micro ls`). */
    workerService: 'notify-worker',

    // ---- Ads ---------------------------------------------------------------------
    // Every ads subject takes the configured prefix `p` (NATS_SUBJECT_PREFIX, '' in
    // production, unique per test). Payload schemas: src/nats/ads-payloads.ts.

    /**
     * `ads.views.<adId>` — JetStream (stream VIEWS_STREAM on `ads.views.>`), one view per
     * message; a producer that sets msgID `<adId>.<visitor>.<window>` has its retries stored
     * once. Payload: ViewEvent. Publishers: trusted producers (the gateway batches instead).
     * Consumer: the view counters (one shared durable pull consumer).
     */
    adsView: (p: string, adId: number): string => `${p}ads.views.${adId}`,
    /**
     * `ads.views.batch` — same stream; payload ViewBatch: the gateway's micro-batches of
     * POST /ads/:id/views (a retried batch keeps its msgID). Repeats are absorbed by the
     * counter's INSERT IGNORE on (ad, visitor, window).
     */
    adsViewBatch: (p: string): string => `${p}ads.views.batch`,
    adsViewsAll: (p: string): string => `${p}ads.views.>`,

    /**
     * `ads.counter.pending` — scatter/gather request (every view counter answers, no queue
     * group). Payload: PendingRequest. Reply: PendingReply (distinct views of that ad
     * received but not yet flushed). Requester: the gateway (GET /ads/:id/views).
     */
    adsPending: (p: string): string => `${p}ads.counter.pending`,

    /**
     * `ads.bump.run` — request (queue group `ads-bump`: one bump actor answers).
     * Payload: BumpRunRequest (`{}`). Reply: BumpRunReply after the run committed.
     * Requester: the gateway (POST /ads/bump), operators.
     */
    adsBumpRun: (p: string): string => `${p}ads.bump.run`,

    /**
     * `ads.bumped` — event after every bump run that bumped ≥ 0 ads. Payload: BumpedEvent.
     * Publisher: the bump actor. Subscribers: anyone (e.g. the site's cache invalidation).
     */
    adsBumped: (p: string): string => `${p}ads.bumped`,

    /**
     * `ads.unread.get` — request (queue group `ads-unread`). Payload: UnreadRequest.
     * Reply: UnreadReply. Requester: the gateway (GET /users/:id/unread), the site.
     */
    adsUnreadGet: (p: string): string => `${p}ads.unread.get`,

    /**
     * `messages.created` — event, published by the site after the message row committed.
     * Payload: MessageCreated. Subscribers: every unread cache (no queue group).
     */
    messagesCreated: (p: string): string => `${p}messages.created`,

    /**
     * `messages.read` — event, published by the site after marking messages read.
     * Payload: MessagesRead. Subscribers: every unread cache (no queue group).
     */
    messagesRead: (p: string): string => `${p}messages.read`,

    // ---- Images (fetcher cache; images themselves never travel over NATS: 1 MiB max_payload) ----

    /**
     * `images.cache.stats.<instance>` — request/reply, core subscription of each process.
     * Payload: empty or `{}`. Reply: `{ ok: true, instance, stats: FetcherStats }`.
     * Requesters: operators, dashboards.
     */
    imagesCacheStats: (instance: string): string => `${pre}images.cache.stats.${instance}`,

    /**
     * `images.cache.stats` — the same request to every process at once (use requestMany);
     * each answers with its own reply as above.
     */
    imagesCacheStatsAll: `${pre}images.cache.stats`,

    /**
     * `images.cache.invalidate` — broadcast, no queue group: every process applies it.
     * Payload: ImagesInvalidate (exactly one of `url`, `product_id`, `all: true`). When
     * sent as a request, each process replies `{ ok: true, instance, removed }`
     * (requestMany collects them). Publishers: the shop backend after a product photo
     * changed, operators.
     */
    imagesCacheInvalidate: `${pre}images.cache.invalidate`,
  } as const;
}

export type SubjectSet = ReturnType<typeof makeSubjects>;

/** The subjects with no prefix (docs, CLI defaults). */
export const Subjects = makeSubjects('');

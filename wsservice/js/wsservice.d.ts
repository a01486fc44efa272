// Type declarations of wsservice.js, the browser client of wsservice (protocol wsservice.v1).

/** The WebSocket subprotocol the client offers. */
export declare const PROTOCOL: "wsservice.v1";
/** This client's version (the wsservice release it ships with). */
export declare const VERSION: string;

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Where the client is: a client never goes back from "closed". */
export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

/** An error from the server (its `error` message), or from the client itself:
 *  `timeout`, `cancelled`, `disconnected`, `closed`, `too_many_calls`, `bad_url`,
 *  `bad_result` (a presence answer without a members list). */
export declare class WsServiceError extends Error {
  constructor(code: string, message?: string, data?: unknown);
  readonly name: "WsServiceError";
  /** The error code: protocol.md's (`unknown_method`, `forbidden`, ...) or an application's. */
  code: string;
  /** The error's data, or null. */
  data: unknown;
}

/** Options of `new Client(url, options)`; times are in seconds. */
export interface ClientOptions {
  /** Kept on the session; handlers see it. Default `{}`. */
  meta?: Record<string, unknown>;
  /** Handed to the server's authenticator in `hello`; a function is asked again before
   *  every connection (fresh tokens). Default none. */
  auth?: unknown | (() => unknown | Promise<unknown>);
  /** Default timeout of calls; 0 waits for ever. Default 30. */
  callTimeout?: number;
  /** Reconnect backoff: the first delay's ceiling (default 0.5), its growth factor
   *  (default 2) and the largest ceiling (default 10); each delay is random below it. */
  backoffInitial?: number;
  backoffFactor?: number;
  backoffMax?: number;
  /** A connection that has no `welcome` by then is given up and tried again. Default 10. */
  connectTimeout?: number;
  /** Requests waiting for a connection at most; past it they reject at once. Default 1000. */
  maxQueuedCalls?: number;
  /** Ack at least every this many messages (default 100) and within ackDelay s (default 1). */
  ackEvery?: number;
  ackDelay?: number;
  /** Where warnings about bad input and failing handlers go; null for nowhere. Default console. */
  logger?: Pick<Console, "warn" | "error"> | null;
  /** The WebSocket class (e.g. Node's `ws` package); default `globalThis.WebSocket`. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/** Options of one call. */
export interface CallOptions {
  /** Seconds to wait for the answer (then `timeout` and the server is told to cancel). */
  timeout?: number;
  /** Aborting it cancels the call (`cancelled`; the server is told). */
  signal?: AbortSignal;
}

/** Called with each server push of an event, or each message of a topic. */
export type Listener = (data: any, seq: number, name: string) => void;
/** Answers a server call: its result, or a Promise of it; throw WsServiceError for an error. */
export type CallHandler = (params: any, seq: number) => unknown | Promise<unknown>;

/** A member of a topic (presence): one session subscribed to it. */
export interface Member {
  /** A public per-session id (never the session id): tells members apart. */
  client: string;
  /** The principal's public name, or null (anonymous). */
  user: string | null;
  /** The member's hello `meta.public`, or null. */
  meta: unknown;
}

export type PresenceKind = "join" | "leave";
/** Called when a session joins or leaves a topic subscribed to with `{presence}`. */
export type PresenceListener = (kind: PresenceKind, member: Member, topic: string) => void;

/** The data of the `presence.join` / `presence.leave` events (also seen by `on()`). */
export interface PresenceEventData {
  topic: string;
  member: Member;
}

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** Also hear who joins and leaves the topic (sends `"presence": true`, again after a
   *  lost session). The list as it is now: `presence(topic)`. */
  presence?: PresenceListener | null;
}

export interface StateChangeDetail {
  state: ClientState;
  /** The close code of the connection that was lost, when one was. */
  code?: number | null;
  reason?: string;
}

export interface ClientEventMap {
  statechange: CustomEvent<StateChangeDetail>;
  open: CustomEvent<{ session: string; resumed: boolean }>;
  resumed: CustomEvent<{ replayed: number }>;
  lost: CustomEvent<{ session: string }>;
  warning: CustomEvent<{ message: string }>;
  error: CustomEvent<WsServiceError>;
}

/** A wsservice session that outlives its connections: reconnects, resumes, replays. */
export declare class Client extends EventTarget {
  /** `url` is ws://, wss:// or a path on this page's host (default "/ws"). */
  constructor(url?: string, options?: ClientOptions);
  readonly url: string;
  /** Resolves at the first welcome; rejects (WsServiceError) if the client closes first. */
  readonly ready: Promise<Client>;
  /** The current session id (null before the first welcome). */
  readonly session: string | null;
  readonly state: ClientState;
  /** The highest seq delivered to the application in this session. */
  readonly lastSeq: number;
  /** Resumes so far, and messages delivered during them. */
  readonly resumes: number;
  readonly replayed: number;
  /** Seconds between the client's pings, from the last welcome (0: none). */
  readonly heartbeat: number;
  /** The topics subscribed to. */
  readonly topics: string[];
  meta: Record<string, unknown>;

  call<T = any>(method: string, params?: unknown, options?: CallOptions): Promise<T>;
  emit(event: string, data?: unknown): void;
  on(event: string, fn: Listener): this;
  off(event: string, fn?: Listener): this;
  handle(method: string, fn: CallHandler | null): this;
  subscribe(topic: string, fn?: Listener | null, options?: SubscribeOptions): Promise<null>;
  /** Leave `topic`, or only remove `fn` (a message or presence function) while others remain. */
  unsubscribe(topic: string, fn?: Listener | PresenceListener): Promise<null>;
  /** Who is in `topic` now; rejects `forbidden` when it may not be subscribed to. */
  presence(topic: string, options?: CallOptions): Promise<Member[]>;
  publish(topic: string, data?: unknown): Promise<null>;
  /** Drop the connection now and reconnect (the session resumes). */
  reconnect(): void;
  /** Say bye and close: the session ends, no reconnect. */
  close(): void;

  addEventListener<K extends keyof ClientEventMap>(
    type: K, listener: (event: ClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof ClientEventMap>(
    type: K, listener: (event: ClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions): void;
}

export default Client;

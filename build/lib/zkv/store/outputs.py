"""What the replica core asks its shell to do: the verbs of its outputs, in one place.

``Replica.take()`` returns tuples ``(verb, ...)``, to be carried out in the order given (a
``LOG`` comes before the frames that announce or acknowledge what it holds):

    (LOG, records, writes)       append the records to the log (fsync=always: synced on return)
    (PUBLISH, [topic, payload])  on our PUB socket, never blocking (a full queue drops it)
    (FETCH, peer, frames)        on our catch-up DEALER to ``peer``
    (CONNECT, peer, endpoint)    (re)dial ``peer``'s catch-up channel at ``endpoint``
    (CLIENT, frames)             to the frontend (the first frame names the connection)
    (SERVE, ident, frames)       a reply on our catch-up ROUTER to ``ident``
    (TRANSFER, peer, ident, tag) stream a fresh snapshot of our state to ``peer``
    (SNAPSHOT,)                  write a snapshot of ``Replica.snapshot_state()``
    (PAUSE, paused)              stop (True) or resume (False) taking client requests
    (CLOCK, value)               make ``value`` the persisted clock bound (zkv.store.clockfile);
                                 the core announces a timestamp only once told it is durable
"""

LOG = "log"
PUBLISH = "pub"
FETCH = "fetch"
CONNECT = "connect"
CLIENT = "client"
SERVE = "serve"
TRANSFER = "transfer"
SNAPSHOT = "snapshot"
PAUSE = "pause"
CLOCK = "clock"

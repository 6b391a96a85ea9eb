# rename-lifecycle.sed - one lifecycle vocabulary in lib/ and cli/ (STYLE.md rule 4):
#   _new/_free      objects that are memory only (tr_lua, tr_table, tr_buf's owners)
#   _open/_close    things that hold a resource: a file, socket, connection, thread,
#                   or libuv handles that die only through their close callbacks
#   _init/_release  structs the caller embeds (tr_buf, tr_hmap, tr_proto_decoder)
#
# NOT APPLIED in the branch that adds it: renaming a lib/ function changes call sites in
# scheduler/ and worker/ that other branches edit at the same time. The lead applies it
# once, to the whole tree, after every branch has landed:
#
#   git ls-files '*.c' '*.h' '*.md' | xargs sed -i -E -f tools/rename-lifecycle.sed
#
# (GNU sed; \b is a word boundary, so longer names such as tr_http__server_maybe_free
# are left alone.) None of the new names exists in the tree before the rename.
#
# tr_zap_start/stop -> tr_zap_open/close (lib/wire/curve.h): it allocates the handler,
#   starts its thread and binds the ZAP socket; stop joins the thread and frees it.
# tr_etcd_new/free -> tr_etcd_open/close (lib/etcd/etcd.h): the client starts a
#   completion-queue thread and holds gRPC channels (connections); "free" completes every
#   call with TR_ECANCELED and finishes only after the loop has run its close callbacks.
# tr_zmq_uv_new/free -> tr_zmq_uv_open/close (lib/wire/zmq_uv.h): it holds libuv handles
#   on the socket's ZMQ_FD, and is freed from their close callbacks, not by the call.
# tr_http_server_new/free -> tr_http_server_open/close (lib/http/http_server.h): it holds
#   the listening socket and every connection, and is freed once their handles are
#   closed (rule 9), so "free" promised a synchronous release it does not do.
# tr_client_new/free -> tr_client_open/close (cli/client.h): the API client holds a curl
#   handle whose connection is kept alive between calls.
#
# Left as they are, on purpose: tr_state_open/close and tr_coord_open/close (already
# right); tr_lua_new/free, tr_table_new/free, tr_http__req_new/free (memory only);
# tr_pipeline_load/tr_pipeline_def_free (a parser that returns an owned object, as git's
# parse_*); tr_etcd_lease_keepalive_start/stop (an operation on a client with the
# callback contract, like uv_timer_start/stop, not an object's lifetime);
# tr_buf/tr_hmap/tr_proto_decoder _init/_release and tr_flag_list_release (embedded).
s/\btr_zap_start\b/tr_zap_open/g
s/\btr_zap_stop\b/tr_zap_close/g
s/\btr_etcd_new\b/tr_etcd_open/g
s/\btr_etcd_free\b/tr_etcd_close/g
s/\btr_zmq_uv_new\b/tr_zmq_uv_open/g
s/\btr_zmq_uv_free\b/tr_zmq_uv_close/g
s/\btr_http_server_new\b/tr_http_server_open/g
s/\btr_http_server_free\b/tr_http_server_close/g
s/\btr_client_new\b/tr_client_open/g
s/\btr_client_free\b/tr_client_close/g

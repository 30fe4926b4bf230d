#!/usr/bin/env python3
"""The other side of archgate's service in the tests: fedora-messaging itself.

    amqp_peer.py publish URL TOPIC BODY_JSON     publish as fedora-messaging does (api.publish)
    amqp_peer.py publish-raw URL ROUTING_KEY TEXT [EXPIRATION_MS]
                                                 publish raw bytes (an invalid message);
                                                 @FILE: the bytes of FILE
    amqp_peer.py bind URL QUEUE KEY              declare a durable queue bound to amq.topic on KEY
    amqp_peer.py bind-only URL QUEUE KEY         bind an existing queue to amq.topic on KEY
    amqp_peer.py declare URL QUEUE ARGS_JSON     declare a durable queue with these arguments
    amqp_peer.py check-config FILE               load a fedora-messaging config file as
                                                 fedora-messaging does (load_config)
    amqp_peer.py headers BODY_JSON              the headers fedora-messaging builds for a
                                                 ContainerPublishedV1 of that body (no sent-at)
    amqp_peer.py exchange URL NAME               declare a durable topic exchange (zmq.topic)
    amqp_peer.py role-queue URL QUEUE KEYS_JSON  what Fedora's roles/rabbit/queue does: a durable
                                                 queue, not auto-delete, no arguments, bound to
                                                 amq.topic and zmq.topic with each key
    amqp_peer.py delete URL QUEUE                delete a queue
    amqp_peer.py drain URL QUEUE                 take every message of QUEUE; print them as JSON,
                                                 each rebuilt and validated by fedora-messaging
                                                 (get_message: its schema class and body schema)
"""

import json
import os
import sys
import tempfile

import pika


def params(url):
    return pika.URLParameters(url)


def publish(url, topic, body):
    # fedora-messaging reads its configuration from a file named by this
    # variable, before the api is imported.
    conf = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    conf.write('amqp_url = "%s"\npublish_exchange = "amq.topic"\npassive_declares = false\n'
               'topic_prefix = ""\n[client_properties]\napp = "archgate tests"\n' % url)
    conf.close()
    os.environ["FEDORA_MESSAGING_CONF"] = conf.name
    from fedora_messaging import api, message

    msg = message.Message(topic=topic, body=json.loads(body))
    api.publish(msg, exchange="amq.topic")
    print(msg.id)


def publish_raw(url, key, text, expiration=None):
    if text.startswith("@"):
        with open(text[1:], "rb") as f:
            body = f.read()
    else:
        body = text.encode()
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.basic_publish("amq.topic", key, body, pika.BasicProperties(delivery_mode=2, expiration=expiration))
    conn.close()


def bind(url, queue, key):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, "amq.topic", key)
    conn.close()


def bind_only(url, queue, key):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.queue_bind(queue, "amq.topic", key)
    conn.close()


def declare(url, queue, args):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=json.loads(args))
    conn.close()


def check_config(path):
    from fedora_messaging import config

    config.conf.load_config(path)
    print(json.dumps({"queues": list(config.conf["queues"]), "prefetch": config.conf["qos"]["prefetch_count"]}))


def headers(body):
    from fedora_image_uploader_messages.publish import ContainerPublishedV1

    msg = ContainerPublishedV1(body=json.loads(body))
    msg.validate()
    built = dict(msg._headers)
    del built["sent-at"]
    print(json.dumps(built))


def exchange(url, name):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.exchange_declare(name, exchange_type="topic", durable=True)
    conn.close()


def role_queue(url, queue, keys):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, auto_delete=False)
    for key in json.loads(keys):
        for x in ("amq.topic", "zmq.topic"):
            ch.queue_bind(queue, x, key)
    conn.close()


def delete(url, queue):
    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    ch.queue_delete(queue)
    conn.close()


def drain(url, queue):
    from fedora_messaging import message

    conn = pika.BlockingConnection(params(url))
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        entry = {
            "routing_key": method.routing_key,
            "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()},
            "delivery_mode": props.delivery_mode,
            "message_id": props.message_id,
            "expiration": props.expiration,
            "raw": body.decode("utf-8", "replace"),
        }
        try:
            msg = message.get_message(method.routing_key, props, body)
            msg.validate()
            entry["class"] = type(msg).__name__
            entry["body"] = msg.body
            entry["containers"] = getattr(msg, "containers", None)
            entry["summary"] = msg.summary
        except Exception as e:  # reported, and the test fails on it
            entry["invalid"] = repr(e)
        out.append(entry)
    conn.close()
    print(json.dumps(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"publish": publish, "publish-raw": publish_raw, "bind": bind, "exchange": exchange, "role-queue": role_queue, "delete": delete, "drain": drain, "headers": headers, "declare": declare, "bind-only": bind_only, "check-config": check_config}[cmd](*args)


if __name__ == "__main__":
    main()

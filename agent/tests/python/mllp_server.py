"""HL7 v2 receiver for the attach tier, built on python-hl7's own MLLP server.

Usage: mllp_server.py HOST PORT OUT
Acknowledges every message with an AA and appends each message, one per line, to OUT.
"""

import asyncio
import sys

from hl7.mllp import start_hl7_server


async def main(host: str, port: int, out: str) -> None:
    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                with open(out, "a", encoding="utf-8") as f:
                    f.write(str(message).replace("\r", "|") + "\n")
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await start_hl7_server(handle, host=host, port=port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))

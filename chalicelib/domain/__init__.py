"""The domain's shared vocabulary: table keys, validators, ids, timestamps and the services' context.

Every layer of the server may import these modules, and they import nothing of the project but each
other and chalicelib.errors, so no import among the layers above can form a cycle through them.
"""

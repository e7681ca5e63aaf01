"""The blueprint JSON Schema (schema.json) and example blueprints (examples/).

A package only so that a wheel carries these data files: builder.blueprint.schema loads schema.json from
here, in a checkout and in an installed imgbuild alike. No code lives here.
"""

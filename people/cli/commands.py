"""The seed's commands (add, get, mod, del) with its flags and lines, `list` and `find`."""

from __future__ import annotations

import argparse
import sys

from people.cli.exits import EXIT_OK
from people.cli.output import print_json, print_message, print_table, user_json
from people.client import PeopleClient
from people.client.people_client import LIST_PAGE_SIZE


async def add_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people add -n NAME -e EMAIL`: create a user; print the seed's line with its id."""
    user_id = await people.create(args.name, args.email)
    if args.json:
        print_json({"id": user_id, "message": "User created successfully"})
    else:
        print(f"User created successfully - ID = {user_id}")
    return EXIT_OK


async def get_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people get [-i ID]`: one user, or every user paged through ListUsers."""
    if args.id:
        user = await people.get(args.id)
        if args.json:
            print_json(user_json(user))
        else:
            print(f"User: ID={user.id}, Name={user.name}, Email={user.email}")
        return EXIT_OK
    # Page through ListUsers rather than GetAllUsers, so any number of users works.
    if args.json:
        print_json([user_json(user) async for user in people.iter_users()])
        return EXIT_OK
    users = people.iter_users()
    listed = await anext(users, None)  # fails before the heading if the server does
    print("List of retrieved users:\n")
    count = 0
    while listed is not None:
        print(f"ID: {listed.id}, Name: {listed.name}, Email: {listed.email}")
        count += 1
        listed = await anext(users, None)
    print(f"\n{count} users retrieved")
    return EXIT_OK


async def list_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people list [--filter F] [--order-by O] [--limit N]`: users as an aligned table."""
    rows: list[dict[str, str]] = []
    # No larger pages than needed: `--limit 5` reads five users, not a thousand.
    page_size = min(args.limit, LIST_PAGE_SIZE) if args.limit else LIST_PAGE_SIZE
    async for user in people.iter_users(
        page_size=page_size, filter=args.filter, order_by=args.order_by
    ):
        if args.limit is not None and len(rows) >= args.limit:
            break
        rows.append(user_json(user))
    if args.json:
        print_json(rows)
        return EXIT_OK
    print_table(rows, ("id", "name", "email", "create_time"))
    print(f"\n{len(rows)} users", file=sys.stderr)
    return EXIT_OK


async def find_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people find -e EMAIL`: the user with this email, as `get -i` shows one."""
    user = await people.find_by_email(args.email)
    if args.json:
        print_json(user_json(user))
    else:
        print(f"User: ID={user.id}, Name={user.name}, Email={user.email}")
    return EXIT_OK


async def mod_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people mod -i ID [-n NAME] [-e EMAIL] [--etag ETAG]`: change what is given."""
    message = await people.update(
        args.id, name=args.name or "", email=args.email or "", etag=args.etag
    )
    print_message(args, message)
    return EXIT_OK


async def del_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people del -i ID [--etag ETAG]`: delete a user."""
    print_message(args, await people.delete(args.id, etag=args.etag))
    return EXIT_OK
